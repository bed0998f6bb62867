-- The ledger: every change of a consumer balance, once. A charge is keyed by the call's
-- request id, so settling a call twice (retries, failover, replays) cannot charge twice.
-- Invariant: consumer_keys.balance_micros = SUM(ledger.amount_micros) for that key.
CREATE TABLE ledger (
    id             BIGSERIAL PRIMARY KEY,
    entry_id       TEXT    NOT NULL UNIQUE,
    key_id         BIGINT  NOT NULL,
    -- Negative: a charge; positive: a grant or top-up.
    amount_micros  BIGINT  NOT NULL,
    kind           TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL
);
CREATE INDEX ledger_key ON ledger (key_id, created_at);

INSERT INTO ledger (entry_id, key_id, amount_micros, kind, created_at)
    SELECT 'grant-' || id, id, balance_micros, 'grant', created_at FROM consumer_keys WHERE balance_micros <> 0;

ALTER TABLE call_log ADD COLUMN charge_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE call_log ADD COLUMN estimated BIGINT NOT NULL DEFAULT 0;
