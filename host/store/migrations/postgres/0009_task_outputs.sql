-- The archived outputs of tasks: one row per file a task produced, naming its content-addressed
-- blob (sha256) in the archive store. Several rows may name one blob (the same bytes twice);
-- a blob is deleted when no row that is not removed names it. A row is marked removed (its
-- blob may be gone) by retention; deleting a task deletes its rows.
CREATE TABLE task_outputs (
    task_id      TEXT    NOT NULL,
    n            BIGINT  NOT NULL,
    sha256       TEXT    NOT NULL,
    size_bytes   BIGINT  NOT NULL,
    content_type TEXT    NOT NULL,
    -- Where the gateway downloaded it from (vendor URLs expire; kept for operators).
    source_url   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    removed_at   BIGINT,
    PRIMARY KEY (task_id, n)
);
CREATE INDEX task_outputs_blob ON task_outputs (sha256);
CREATE INDEX task_outputs_age ON task_outputs (created_at);

-- What a surface keeps of a task's request to show it back (OpenAI's video object: seconds,
-- size, prompt), as JSON; NULL for tasks that keep nothing.
ALTER TABLE tasks ADD COLUMN params TEXT;

-- A consumer's callback: the end of the task is POSTed, signed, to callback_url; its delivery
-- is pending, delivered or failed (after its retries), due again at callback_at.
ALTER TABLE tasks ADD COLUMN callback_url TEXT;
ALTER TABLE tasks ADD COLUMN callback_state TEXT;
ALTER TABLE tasks ADD COLUMN callback_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN callback_at BIGINT;
CREATE INDEX tasks_callbacks ON tasks (callback_state, callback_at);
