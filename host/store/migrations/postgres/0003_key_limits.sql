-- Consumer key limits: an expiry (unix seconds, NULL = never) and a model allow-list
-- (comma-separated, NULL = every model).
ALTER TABLE consumer_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE consumer_keys ADD COLUMN models TEXT;
