-- The audit team's tools (issue "audit team"): searches by user and by organisation answer
-- from an index range whatever the trail's size; bulk exports are jobs with a status row.
CREATE INDEX audit_events_by_user ON audit_events (user_id, id);
CREATE INDEX audit_events_by_org ON audit_events (user_org, id);
-- One row per bulk export (HL7 FHIR Bulk Data Access, async pattern): who asked, for what, how
-- far it has got. The NDJSON files are kept in the export directory until `expires`.
CREATE TABLE exports (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    client       TEXT NOT NULL,
    request      TEXT NOT NULL,
    filter       TEXT NOT NULL,
    status       TEXT NOT NULL,
    created      BIGINT NOT NULL,
    updated      BIGINT NOT NULL,
    written      BIGINT NOT NULL,
    files        TEXT NOT NULL,
    error        TEXT,
    expires      BIGINT
);
