DELETE FROM audit_index WHERE name IN ('users', 'orgs');
DROP TABLE audit_orgs;
DROP TABLE audit_users;
CREATE INDEX audit_events_by_user ON audit_events (user_id, id);
CREATE INDEX audit_events_by_org ON audit_events (user_org, id);
