-- Vendor objects a consumer's call created (files, voices) that its later calls name: the
-- upstream key that created each (by fingerprint: a SHA-256 of the key, never the key). A
-- follow-up call runs on that key; an object is found only for the user who created it (the
-- same id in another user's row is another object, on another vendor account).
CREATE TABLE vendor_objects (
    plugin          TEXT    NOT NULL,
    user_id         BIGINT  NOT NULL,
    object_id       TEXT    NOT NULL,
    key_fingerprint TEXT    NOT NULL,
    request_id      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (plugin, user_id, object_id)
);
