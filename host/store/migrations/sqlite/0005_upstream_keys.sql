-- Upstream keys kept in the database (imported through the CLI or the admin API), encrypted
-- with the master key from TOLLGATE_MASTER_KEY. Keys written in the configuration file are not
-- stored here.
CREATE TABLE upstream_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    channel      TEXT    NOT NULL,
    -- SHA-256 of the key: finds a key imported twice without decrypting anything.
    fingerprint  TEXT    NOT NULL,
    -- The first characters, for operators.
    key_prefix   TEXT    NOT NULL,
    -- hex(24-byte nonce || XChaCha20-Poly1305 ciphertext); the channel's name is the
    -- associated data, so a row copied to another channel does not decrypt.
    secret       TEXT    NOT NULL,
    weight       BIGINT  NOT NULL DEFAULT 1,
    priority     BIGINT  NOT NULL DEFAULT 0,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    UNIQUE (channel, fingerprint)
);
