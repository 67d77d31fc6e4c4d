-- Requests for wrk, rotated: bench/wrk.py writes the list (REQUESTS) and the headers (HEADERS) above this script.
-- Each wrk thread starts at its own offset, so that threads do not ask for the same resource at the same time.
local index = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 97)
end

function init(args)
  index = offset or 0
end

function request()
  index = index % #REQUESTS + 1
  local r = REQUESTS[index]
  return wrk.format(r[1], r[2], HEADERS, r[3])
end

-- One JSON line on stdout: what bench/wrk.py reads (latencies in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, "errors_write": %d, ' ..
    '"errors_status": %d, "errors_timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
