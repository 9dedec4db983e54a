DROP TRIGGER audit_events_notify;
DROP TABLE notification_outbox;
DROP TABLE notifications;
DROP TABLE subscriptions;
