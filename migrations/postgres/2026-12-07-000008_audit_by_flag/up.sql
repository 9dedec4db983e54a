-- The audit team's `entity=Flag/{id}` search (issue "audit team"): which accesses disclosed a
-- given Flag. `audit_events.disclosed` is a JSON array no index can reach into, so the Flags
-- each access disclosed are also kept here, keyed by the Flag. It holds nothing the audit
-- trail does not, leaves with its audit row (retention removes both), and outlives the Flag
-- itself: a complaint can arrive years after the record has gone.
--
-- It is filled behind the trail, not by the look-up (an index insert per look-up cost the
-- look-up benchmark several per cent): after each lifecycle run, every row recorded up to a
-- few minutes ago and after `audit_index.through` is indexed, in small writer jobs. A search
-- reads this table for the rows up to `through` and matches `disclosed` for the few after it.
CREATE TABLE audit_flags (
    flag_id  TEXT NOT NULL,
    audit_id TEXT NOT NULL,
    PRIMARY KEY (flag_id, audit_id)
);
CREATE TABLE audit_index (
    name    TEXT PRIMARY KEY NOT NULL,
    through TEXT NOT NULL
);
-- Nothing indexed yet: the first lifecycle run after the upgrade indexes the existing trail.
INSERT INTO audit_index (name, through) VALUES ('flags', '');
