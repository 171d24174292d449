-- wrk script for the benchmark: POST a unique order per request and time each answer.
--
-- Every request carries a quantity no other request of the run carries (thread number times
-- 10^8 plus a counter), so every body is different and each answer, which echoes the quantity,
-- can be matched to the moment its request was built. Environment:
--   BENCH_RECORDS       file that done() fills with one line per answer: "<end ms> <latency ms> <status>"
--   BENCH_SUMMARY       file that done() fills with wrk's own figures as JSON
--   BENCH_QUOTA         answers after which each wrk thread stops (0: run for wrk's -d)
--   BENCH_DELAY_MS      pause of each connection before each request (0: none)

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local INSTRUMENTS = { "US0378331005", "US5949181045", "DE0007164600", "GB0002634946", "NL0010273215" }
local QUANTITY_STRIDE = 100000000

local threads = {}
local next_thread = 1

function setup(thread)
  thread:set("number", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  answers = 0
  sent_at = {}
  ends, latencies, statuses = {}, {}, {}
  started = now_ms()
  quota = tonumber(os.getenv("BENCH_QUOTA") or "0")
  pause_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function delay()
  return pause_ms
end

function request()
  counter = counter + 1
  local quantity = number * QUANTITY_STRIDE + counter
  local instrument = INSTRUMENTS[counter % #INSTRUMENTS + 1]
  local body
  if counter % 2 == 1 then
    body = string.format(
      '{"type":"limit","side":"buy","instrument":"%s","limit_price":"%d.%02d","quantity":%d}',
      instrument, 100 + counter % 50, counter % 100, quantity)
  else
    body = string.format('{"type":"market","side":"sell","instrument":"%s","quantity":%d}', instrument, quantity)
  end
  sent_at[quantity] = now_ms()
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  local finished = now_ms()
  answers = answers + 1
  local quantity = tonumber(string.match(body, '"quantity":%s*(%d+)'))
  local sent = quantity and sent_at[quantity]
  if sent then
    sent_at[quantity] = nil
    local n = #ends + 1
    ends[n] = finished - started
    latencies[n] = finished - sent
    statuses[n] = status
  end
  if quota > 0 and answers >= quota then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local records = io.open(os.getenv("BENCH_RECORDS"), "w")
  for _, thread in ipairs(threads) do
    local thread_ends = thread:get("ends")
    local thread_latencies = thread:get("latencies")
    local thread_statuses = thread:get("statuses")
    for i = 1, #thread_ends do
      records:write(string.format("%.3f %.3f %d\n", thread_ends[i], thread_latencies[i], thread_statuses[i]))
    end
  end
  records:close()
  local errors = summary.errors
  local out = io.open(os.getenv("BENCH_SUMMARY"), "w")
  out:write(string.format(
    '{"duration_us":%d,"requests":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.duration, summary.requests, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
  out:close()
end
