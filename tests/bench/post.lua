-- wrk script: POST one small non-streaming chat completion per request, and print the figures
-- run.sh needs as one machine-readable line (so nothing depends on wrk's unit-formatted text).
--
-- Environment:
--   AUTH           bearer token sent as "Authorization: Bearer $AUTH" (default "sk-bench")
--   MODEL          model name in the body (default "gpt-4o-mini")
--   EXTRA_HEADERS  optional extra headers, "Name: value" separated by ";" (used for Portkey routing)

wrk.method = "POST"
wrk.body = '{"model":"' .. (os.getenv("MODEL") or "gpt-4o-mini") ..
           '","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("AUTH") or "sk-bench")

local extra = os.getenv("EXTRA_HEADERS") or ""
for pair in string.gmatch(extra, "[^;]+") do
  local name, value = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end

-- Runs once in the main thread after the load: latency figures are in microseconds,
-- duration is the measured wall time in microseconds, errors.status counts non-2xx/3xx answers.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
