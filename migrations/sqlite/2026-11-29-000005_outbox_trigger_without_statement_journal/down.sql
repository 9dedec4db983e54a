DROP TRIGGER audit_events_notify;
CREATE TRIGGER audit_events_notify AFTER INSERT ON audit_events
WHEN NEW.listed AND NEW.councils <> '' AND (
    EXISTS (SELECT 1 FROM subscriptions
            WHERE council = NEW.councils AND status IN ('requested', 'active', 'error'))
    OR (instr(NEW.councils, ' ') > 0 AND EXISTS (
        SELECT 1 FROM subscriptions
        WHERE instr(' ' || NEW.councils || ' ', ' ' || council || ' ') > 0
          AND status IN ('requested', 'active', 'error'))))
BEGIN
    INSERT INTO notification_outbox (audit_event_id, councils, recorded)
    VALUES (NEW.id, NEW.councils, NEW.recorded);
END;
