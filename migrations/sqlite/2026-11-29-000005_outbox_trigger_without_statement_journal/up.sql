-- The outbox trigger, without the per-council test in its WHEN clause. That test called
-- instr(), and a trigger that calls a function, on an INSERT that may abort, makes SQLite keep
-- a statement journal (a copy of every page the INSERT touches) for every audit row. The
-- audit INSERT is now `INSERT OR IGNORE` (a row it ignores is reported as a failure), so
-- nothing in it may abort either. The trigger now writes an outbox row for every listed
-- access while any live subscription exists; the delivery worker already matches each row to
-- the subscriptions of its councils, older than the access, and drops it when there are none.
DROP TRIGGER audit_events_notify;
CREATE TRIGGER audit_events_notify AFTER INSERT ON audit_events
WHEN NEW.listed AND NEW.councils <> ''
    AND EXISTS (SELECT 1 FROM subscriptions WHERE status IN ('requested', 'active', 'error'))
BEGIN
    INSERT INTO notification_outbox (audit_event_id, councils, recorded)
    VALUES (NEW.id, NEW.councils, NEW.recorded);
END;
