-- Asynchronous vendor jobs (video, music, long speech): one row per job, for every vendor. The
-- upstream key that created a job polls and downloads it (by fingerprint, never the key). A
-- node polls a due task only under a lease (lease_owner, lease_until), so several nodes on one
-- database never poll one task at once; a task reaches a final status once (settled), and only
-- that transition may charge or release its reservation.
CREATE TABLE tasks (
    id              TEXT    NOT NULL PRIMARY KEY,
    user_id         BIGINT  NOT NULL,
    key_id          BIGINT  NOT NULL,
    channel         TEXT    NOT NULL,
    key_fingerprint TEXT    NOT NULL,
    plugin          TEXT    NOT NULL,
    plugin_version  TEXT    NOT NULL,
    op              TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    -- The consumer group whose price multiplier applies when the task is settled.
    price_group     TEXT    NOT NULL,
    -- The plugin's persisted state, handed back on every poll (size-capped by the gateway).
    state           TEXT    NOT NULL,
    -- queued, in_progress, succeeded, failed, expired, cancelled.
    status          TEXT    NOT NULL,
    progress        BIGINT,
    message         TEXT,
    polls           BIGINT  NOT NULL DEFAULT 0,
    next_poll_at    BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    -- The outputs as JSON once the job succeeded.
    outputs         TEXT,
    reserved_micros BIGINT  NOT NULL,
    charge_micros   BIGINT,
    error_kind      TEXT,
    request_id      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL
);
CREATE INDEX tasks_due ON tasks (status, next_poll_at);
CREATE INDEX tasks_owner ON tasks (user_id, created_at);
