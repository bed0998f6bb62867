-- A call made from a chat socket: the chat it answered (`chat_id`) and the app's own user
-- reference (`user_uuid`, recorded as the app sent it, never an identity).
ALTER TABLE call_log ADD COLUMN chat_id TEXT;
ALTER TABLE call_log ADD COLUMN user_uuid TEXT;
