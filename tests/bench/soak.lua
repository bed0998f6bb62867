-- wrk script for the soak (soak.sh): the same request as post.lua (loaded from this folder, so
-- the body, headers and the WRK_JSON summary line are post.lua's), sent at a fixed rate.
--
-- wrk has no fixed-rate mode; `delay()` is called before each request of a thread (for any of
-- its connections) and returns how many milliseconds to hold it. Here each call claims the next
-- slot of one schedule for the thread, a slot every 1/RATE s, so the thread sends RATE requests a
-- second whatever the latency is, as long as a connection is free (the connections are the
-- headroom: use more than RATE x latency). A thread that fell behind (no free connection at its
-- slot) catches up for at most MAX_LAG_MS; slots older than that are skipped rather than sent
-- in a burst, so a stall shows as a lower achieved rate instead of a spike.
--
-- Environment (besides post.lua's AUTH, MODEL, EXTRA_HEADERS):
--   RATE         requests per second for the whole run (required)
--   THREADS      wrk's -t (each thread takes RATE / THREADS; default 1)
--   MAX_LAG_MS   how far behind the schedule a thread may catch up (default 100)

local src = debug.getinfo(1, "S").source
local dir = src:match("^@(.*/)") or "./"
dofile(dir .. "post.lua")

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clk_id, soak_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("RATE") or "")
local threads = tonumber(os.getenv("THREADS") or "1")
local max_lag = tonumber(os.getenv("MAX_LAG_MS") or "100")
if not rate or rate <= 0 then
  error("soak.lua: set RATE (requests per second) in the environment")
end
local interval = 1000 * threads / rate -- ms between this thread's requests
local next_slot = nil

function delay()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now
  elseif next_slot < now - max_lag then
    next_slot = now - max_lag
  end
  local slot = next_slot
  next_slot = slot + interval
  local wait = slot - now
  if wait <= 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end
