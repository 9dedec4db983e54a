DELETE FROM audit_index WHERE name = 'patients';
DROP TABLE audit_patients;
DROP INDEX audit_events_history;
CREATE INDEX audit_events_by_patient ON audit_events (patient, listed, recorded);
