-- The chat and the app's user reference a task was submitted for (the progress socket
-- delivers a task's events to the registrations that name them; recorded, never an identity).
ALTER TABLE tasks ADD COLUMN chat_id TEXT;
ALTER TABLE tasks ADD COLUMN user_uuid TEXT;

-- What happened to a task, in order (a submit, progress, the end), for the progress socket:
-- the node that holds a matching registration pushes an event and marks it delivered; one
-- left undelivered is replayed when its owner registers again, within the replay window,
-- after which it is pruned. The status and progress are the task's at the time.
CREATE TABLE task_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT    NOT NULL,
    user_id     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    progress    INTEGER,
    created_at  INTEGER NOT NULL,
    delivered   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX task_events_owner ON task_events (user_id, delivered, created_at);
CREATE INDEX task_events_age ON task_events (created_at);
CREATE INDEX task_events_task ON task_events (task_id);
