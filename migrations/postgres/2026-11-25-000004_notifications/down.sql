DROP TRIGGER audit_events_notify ON audit_events;
DROP FUNCTION audit_events_notify();
DROP TABLE notification_outbox;
DROP TABLE notifications;
DROP TABLE subscriptions;
