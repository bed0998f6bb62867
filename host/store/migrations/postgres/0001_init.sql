-- Consumers' API keys. Only a SHA-256 of each key is stored; the key itself is shown once.
CREATE TABLE consumer_keys (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT    NOT NULL,
    key_hash       TEXT    NOT NULL UNIQUE,
    key_prefix     TEXT    NOT NULL,
    -- Money in millionths of the currency unit: exact integers, never floating point.
    balance_micros BIGINT  NOT NULL DEFAULT 0,
    disabled       BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);

-- One row per consumer call, written by the batching writer.
CREATE TABLE call_log (
    id             BIGSERIAL PRIMARY KEY,
    request_id     TEXT    NOT NULL,
    key_id         BIGINT,
    channel        TEXT,
    plugin         TEXT,
    model          TEXT,
    op             TEXT    NOT NULL,
    status         BIGINT  NOT NULL,
    error_kind     TEXT,
    latency_us     BIGINT  NOT NULL,
    streamed       BIGINT  NOT NULL,
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    cached_tokens  BIGINT,
    characters     BIGINT,
    milliseconds   BIGINT,
    images         BIGINT,
    -- 1 when the stream ended abnormally and the usage is what was seen up to then.
    interrupted    BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL
);
CREATE INDEX call_log_key_time ON call_log (key_id, created_at);
CREATE INDEX call_log_request ON call_log (request_id);
