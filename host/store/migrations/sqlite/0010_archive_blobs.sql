-- The archive's blobs, one row per stored object: the lock that keeps a blob's deletion
-- from racing a download of the same bytes (several nodes may share one object store).
-- A download holds its blob (holds + 1, until held_until at the latest) from before it is
-- stored until its task's rows name it (holds - 1, in the transaction that records them); a
-- deletion first marks the row (deleting = when), only if no hold is current and no live row
-- names the blob, then deletes the object, then the row. A hold is refused while the row is
-- marked. Rows left marked (a crash) or unheld and unnamed (a download whose task never
-- recorded it) are swept.
CREATE TABLE archive_blobs (
    sha256     TEXT   PRIMARY KEY,
    holds      BIGINT NOT NULL DEFAULT 0,
    held_until BIGINT NOT NULL,
    deleting   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX archive_blobs_sweep ON archive_blobs (held_until);

-- Blobs stored before this table: named by their rows.
INSERT INTO archive_blobs (sha256, held_until) SELECT DISTINCT sha256, 0 FROM task_outputs;
