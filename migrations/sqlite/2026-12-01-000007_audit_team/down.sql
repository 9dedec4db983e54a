DROP TABLE exports;
DROP INDEX audit_events_by_org;
DROP INDEX audit_events_by_user;
