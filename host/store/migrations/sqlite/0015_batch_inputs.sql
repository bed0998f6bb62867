-- A batch input file's summary (JSON, written by the engine's `batch` module when the
-- consumer uploaded it with purpose "batch"): its model, lines and token bounds, which price
-- and reserve a batch made from it. NULL for every other object.
ALTER TABLE vendor_objects ADD COLUMN batch_input TEXT;
