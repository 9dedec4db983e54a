-- Council notifications (issue "Council notifications"; DESIGN.md "The disclosure path").
--
-- `subscriptions`: a council's webhook (R4 Subscription, Subscriptions R5 Backport IG). The
-- secret signs every notification; `headers` are sent with it; neither is ever rendered.
-- `delivered_through` is the last event number the endpoint acknowledged, `event_count` the last
-- event number given out: the backlog is everything between them.
CREATE TABLE subscriptions (
    id                TEXT PRIMARY KEY NOT NULL,
    council           TEXT NOT NULL REFERENCES local_authorities (ods_code),
    status            TEXT NOT NULL,
    reason            TEXT NOT NULL,
    end_at            BIGINT,
    endpoint          TEXT NOT NULL,
    headers           TEXT NOT NULL,
    content           TEXT NOT NULL,
    heartbeat_secs    BIGINT,
    timeout_secs      BIGINT NOT NULL,
    max_count         BIGINT NOT NULL,
    secret            TEXT NOT NULL,
    event_count       BIGINT NOT NULL,
    delivered_through BIGINT NOT NULL,
    error             TEXT,
    attempts          BIGINT NOT NULL,
    next_attempt_at   BIGINT NOT NULL,
    last_sent_at      BIGINT,
    heartbeat_at      BIGINT,
    lease_owner       TEXT,
    lease_until       BIGINT,
    created_at        BIGINT NOT NULL,
    version           BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX subscriptions_by_council ON subscriptions (council);

-- Every event given to a subscription, by number: what the worker delivers in order and what
-- `$events` replays. Kept as long as the AuditEvent it points to.
CREATE TABLE notifications (
    subscription_id TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_number    BIGINT NOT NULL,
    audit_event_id  TEXT NOT NULL,
    recorded        BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, event_number)
);
CREATE INDEX notifications_by_recorded ON notifications (recorded);

-- The outbox: one row for every access that must be notified (an unscheduled access that
-- disclosed a record), written by the same INSERT statement as its AuditEvent (the trigger runs
-- inside it), so the two are committed together or not at all, with no extra work for the
-- look-up. The delivery worker turns each row into numbered events of the councils'
-- subscriptions and deletes it in one transaction. An access to records of councils with no
-- live subscription writes nothing: nobody could be notified of it (a subscription sees only
-- accesses made after it was created). No AUTOINCREMENT: it would update
-- sqlite_sequence on every look-up; ids only need to order the rows present, which a plain
-- rowid does.
CREATE TABLE notification_outbox (
    id             INTEGER PRIMARY KEY,
    audit_event_id TEXT NOT NULL,
    councils       TEXT NOT NULL,
    recorded       BIGINT NOT NULL
);
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
