-- Vendor objects a call created (files, voices) that later calls name: the upstream key that
-- created each (by fingerprint: a SHA-256 of the key, never the key) and its owner. A
-- follow-up call runs on that key, for that owner only.
CREATE TABLE vendor_objects (
    channel         TEXT    NOT NULL,
    object_id       TEXT    NOT NULL,
    key_fingerprint TEXT    NOT NULL,
    user_id         BIGINT  NOT NULL,
    request_id      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (channel, object_id)
);
