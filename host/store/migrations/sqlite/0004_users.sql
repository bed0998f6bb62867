-- Users own consumer keys and the balance; a key may carry its own spending limit.
-- Invariants: users.balance_micros = SUM(ledger.amount_micros) of the user;
-- consumer_keys.spent_micros = -SUM(ledger.amount_micros) of the key's charges.
CREATE TABLE users (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL UNIQUE,
    -- argon2id; NULL: the user cannot log in (created by an operator for API keys only).
    password_hash  TEXT,
    role           TEXT    NOT NULL DEFAULT 'user',
    user_group     TEXT    NOT NULL DEFAULT 'default',
    balance_micros BIGINT  NOT NULL DEFAULT 0,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);

ALTER TABLE consumer_keys ADD COLUMN user_id BIGINT;
ALTER TABLE consumer_keys ADD COLUMN spend_limit_micros BIGINT;
ALTER TABLE consumer_keys ADD COLUMN spent_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN user_id BIGINT;

-- Each key created before users existed becomes its own user, keeping its balance.
INSERT INTO users (name, balance_micros, created_at, updated_at)
    SELECT 'key-' || id, balance_micros, created_at, updated_at FROM consumer_keys;
UPDATE consumer_keys SET user_id = (SELECT u.id FROM users u WHERE u.name = 'key-' || consumer_keys.id),
    spent_micros = COALESCE((SELECT -SUM(l.amount_micros) FROM ledger l WHERE l.key_id = consumer_keys.id AND l.kind = 'charge'), 0);
UPDATE ledger SET user_id = (SELECT k.user_id FROM consumer_keys k WHERE k.id = ledger.key_id);
CREATE INDEX consumer_keys_user ON consumer_keys (user_id);
CREATE INDEX ledger_user ON ledger (user_id, created_at);
