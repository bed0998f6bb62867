-- A vendor object's one-time fee (a cloned voice's, charged on its first use): the op that
-- created the object while its fee is still due, NULL once a call using it was charged the
-- fee (or for rows created before this column). Whether a fee applies at all is the price
-- table's `first_use` of that op, read when a call uses the object.
ALTER TABLE vendor_objects ADD COLUMN fee_due_op TEXT;

-- The one-time fees a task's submit reserved for the objects it used: charged with the task
-- when it succeeds (within its hold), never when it fails.
ALTER TABLE tasks ADD COLUMN fee_micros BIGINT NOT NULL DEFAULT 0;
