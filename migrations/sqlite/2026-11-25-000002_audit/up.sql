-- One row per read or search of Patient or Flag data, written in the same transaction as the
-- read and committed before the response (DESIGN.md "The disclosure path"). Rows are never
-- updated; ids are UUIDv7 so the table is appended in order.
CREATE TABLE audit_events (
    id            TEXT PRIMARY KEY NOT NULL,
    recorded      BIGINT NOT NULL,
    resource_type TEXT NOT NULL,
    subtype       TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    outcome_desc  TEXT,
    user_id       TEXT NOT NULL,
    user_name     TEXT,
    user_role     TEXT NOT NULL,
    user_org      TEXT NOT NULL,
    client        TEXT NOT NULL,
    patient       TEXT,
    councils      TEXT NOT NULL,
    disclosed     TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    trace_id      TEXT,
    unscheduled   BOOLEAN NOT NULL,
    listed        BOOLEAN NOT NULL,
    query         TEXT NOT NULL
);
CREATE INDEX audit_events_by_patient ON audit_events (patient, listed, recorded);
-- No index on `recorded`: ids are UUIDv7, so the primary key already orders rows by time
-- (retention removes by id range), and every index costs the look-up path a b-tree insert.
