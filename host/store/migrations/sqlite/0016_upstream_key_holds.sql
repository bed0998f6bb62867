-- Upstream keys an operator disabled (POST /admin/channels/{name}/keys/{fingerprint}/disable),
-- by channel and fingerprint (SHA-256 of the key): a key of the configuration file or a stored
-- one. Every node sharing the database keeps such a key out of its pools; enabling the key
-- deletes its row, and so does removing a stored key.
CREATE TABLE upstream_key_holds (
    channel      TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (channel, fingerprint)
);
