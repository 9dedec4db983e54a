-- A person's accesses, found two ways (issue "a clinician's look-up stays fast as the audit
-- trail grows"). The index on every row's person cost each look-up a b-tree insert at a random
-- place in an index as large as the trail: on a 10 million-row trail, a quarter of the look-up
-- benchmark's throughput.
--
-- 1. The access history (DOMAIN.md: the latest 25 unscheduled accesses) must show an access the
--    moment it is committed, so its rows stay indexed by the look-up itself — but only they:
--    a listed access is an unscheduled look-up that found a record, a small share of the trail.
-- 2. The audit team's search by person reads every row about the person. It is indexed behind
--    the trail, as the Flags are (`audit_flags`): `audit_patients` holds each row's person up to
--    `audit_index.through` for 'patients'; a search matches `patient` for the rows after it.
DROP INDEX audit_events_by_patient;
CREATE INDEX audit_events_history ON audit_events (patient, recorded, id) WHERE listed;
CREATE TABLE audit_patients (
    patient  TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    PRIMARY KEY (patient, audit_id)
) WITHOUT ROWID;
-- Nothing indexed yet: the first lifecycle run after the upgrade indexes the existing trail.
INSERT INTO audit_index (name, through) VALUES ('patients', '');
