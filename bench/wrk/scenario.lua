-- One wrk scenario, configured by bench/run.py through the environment:
--   BENCH_METHOD   GET or POST
--   BENCH_BODY     request body (JSON), sent with Content-Type: application/json
--   BENCH_TARGETS  file with one "<path> <bearer token or ->" line per target; requests
--                  take them in turn (e.g. 50 users, each posting to their own conversation)
--   BENCH_HEADER   one extra "Name: value" header (e.g. an Idempotency-Key)
-- done() prints one line "WRKJSON {...}" with the figures bench/run.py reads.

local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local extra = os.getenv("BENCH_HEADER")
local targets = {}

for line in io.lines(os.getenv("BENCH_TARGETS")) do
  local path, token = line:match("^(%S+)%s+(%S+)$")
  if path then
    local headers = {}
    if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
    if body and body ~= "" then headers["Content-Type"] = "application/json" end
    if extra and extra ~= "" then
      local name, value = extra:match("^([^:]+):%s*(.*)$")
      headers[name] = value
    end
    table.insert(targets, wrk.format(method, path, headers, body))
  end
end

local counter = 0
function init(args)
  counter = math.random(#targets) - 1
  codes = {}
end

function request()
  counter = counter + 1
  return targets[(counter % #targets) + 1]
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local by_status = {}
  for _, thread in ipairs(threads) do
    local codes = thread:get("codes")
    for status, count in pairs(codes) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, "non2xx": %d, "status": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, e.status,
    table.concat(parts, ", ")))
end
