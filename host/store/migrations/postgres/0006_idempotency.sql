-- Idempotency keys: a consumer key's first call with an Idempotency-Key claims the row before
-- the upstream is called; a repeat gets the stored answer (or "in progress", or "different
-- request"), never a second upstream call. Rows are kept for a day.
CREATE TABLE idempotency (
    key_id       BIGINT  NOT NULL,
    idem_key     TEXT    NOT NULL,
    -- SHA-256 of the operation and the body: a repeat must be the same request.
    fingerprint  TEXT    NOT NULL,
    request_id   TEXT    NOT NULL,
    -- 0: in progress; 1: answered, stored below; 2: answered, too large or a download (not kept).
    state        BIGINT  NOT NULL,
    status       BIGINT,
    content_type TEXT,
    body         BYTEA,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
