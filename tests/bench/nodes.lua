-- wrk script for nodes.sh's overdraw run: post.lua's chat request (same headers, same WRK_JSON
-- line) with "max_tokens" set (env MAX_TOKENS, default 16). Without it a call reserves the
-- model's 4,096 output tokens (~2,460 micros at the bench's prices, ~600 calls' charge), so a
-- balance of a few hundred calls would admit one call at a time; with it a call reserves a few
-- micros and the balance is spent by many calls in flight at once, as a real balance is.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "post.lua")

wrk.body = '{"model":"' .. (os.getenv("MODEL") or "gpt-4o-mini") ..
           '","max_tokens":' .. tonumber(os.getenv("MAX_TOKENS") or "16") ..
           ',"messages":[{"role":"user","content":"hello"}]}'
