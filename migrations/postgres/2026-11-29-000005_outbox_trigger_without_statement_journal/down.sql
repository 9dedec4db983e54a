CREATE OR REPLACE FUNCTION audit_events_notify() RETURNS trigger AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM subscriptions
        WHERE position(' ' || council || ' ' IN ' ' || NEW.councils || ' ') > 0
          AND status IN ('requested', 'active', 'error')) THEN
        RETURN NULL;
    END IF;
    INSERT INTO notification_outbox (audit_event_id, councils, recorded)
    VALUES (NEW.id, NEW.councils, NEW.recorded);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
