-- Who made each access, indexed behind the trail (issue "a clinician's look-up stays fast as
-- the audit trail grows"). The look-up wrote an entry into an index of every row's user and one
-- of every row's organisation: on the look-up benchmark's fresh register 4–12% of its
-- throughput (interleaved runs with both indexes dropped). The audit team's `agent` and
-- `agent-org` searches read `audit_users` and `audit_orgs` up to `audit_index.through` for
-- 'users' and 'orgs', filled by the lifecycle run as `audit_flags` and `audit_patients` are,
-- and match `user_id` or `user_org` along the primary key for the rows after it.
DROP INDEX audit_events_by_user;
DROP INDEX audit_events_by_org;
CREATE TABLE audit_users (
    user_id  TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    PRIMARY KEY (user_id, audit_id)
) WITHOUT ROWID;
CREATE TABLE audit_orgs (
    user_org TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    PRIMARY KEY (user_org, audit_id)
) WITHOUT ROWID;
-- Nothing indexed yet: the first lifecycle run after the upgrade indexes the existing trail.
INSERT INTO audit_index (name, through) VALUES ('users', '');
INSERT INTO audit_index (name, through) VALUES ('orgs', '');
