-- A user's unfinished tasks, counted before each submit (`task_max_open_per_user`) without
-- reading the user's whole history.
CREATE INDEX tasks_open ON tasks (user_id) WHERE status IN ('queued', 'in_progress');
