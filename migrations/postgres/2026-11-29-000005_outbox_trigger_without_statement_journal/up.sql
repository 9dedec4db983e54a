-- The same rule as on SQLite: an outbox row for every listed access while any live
-- subscription exists; the delivery worker matches it to its councils' subscriptions.
CREATE OR REPLACE FUNCTION audit_events_notify() RETURNS trigger AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM subscriptions WHERE status IN ('requested', 'active', 'error')) THEN
        RETURN NULL;
    END IF;
    INSERT INTO notification_outbox (audit_event_id, councils, recorded)
    VALUES (NEW.id, NEW.councils, NEW.recorded);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
