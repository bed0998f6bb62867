-- Session tokens signed out before they expired (DELETE /console/session, POST /v1/auth/logout),
-- by SHA-256 of the token: refused on every node sharing the database until they would have
-- expired anyway. A sign-out deletes the rows past their expiry, so the table holds at most the
-- sessions signed out within the last session_ttl_hours.
CREATE TABLE revoked_sessions (
    token_sha256 TEXT   NOT NULL PRIMARY KEY,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at);
