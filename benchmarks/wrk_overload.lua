-- The overload section's wrk script: latency by outcome, which wrk's own summary cannot split.
--
-- Each request carries a traceparent with a trace id of its own (the wrk thread's number and a
-- sequence number). The server continues that trace and names it in its traceresponse header,
-- so each response is matched to its request's start time, whatever the order in which
-- the thread's connections answer. Outcomes: ok (2xx), shed (503 with Retry-After), other.
-- One JSON line at the end, so the harness never parses wrk's prose.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } overload_timespec;
int clock_gettime(int clock_id, overload_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("overload_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + math.floor(tonumber(timespec.tv_nsec) / 1000)
end

local threads = {}

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  sequence = 0
  started = {}
  ok, shed, other = {}, {}, {}
  statuses = {}
  unmatched = 0
  trace_prefix = string.format("%08x", thread_number) .. "0000000000000000"
end

function request()
  sequence = sequence + 1
  local trace_id = trace_prefix .. string.format("%08x", sequence)
  started[trace_id] = now_us()
  return wrk.format(nil, nil, { ["traceparent"] = "00-" .. trace_id .. "-00000000000000a1-01" })
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  local traceresponse = headers["traceresponse"] or headers["Traceresponse"]
  local trace_id = traceresponse and string.sub(traceresponse, 4, 35)
  local start = trace_id and started[trace_id]
  if not start then
    unmatched = unmatched + 1
    return
  end
  started[trace_id] = nil
  local elapsed = now_us() - start
  if status >= 200 and status < 300 then
    ok[#ok + 1] = elapsed
  elseif status == 503 and (headers["retry-after"] or headers["Retry-After"]) then
    shed[#shed + 1] = elapsed
  else
    other[#other + 1] = elapsed
  end
end

local function percentiles(values)
  table.sort(values)
  local n = #values
  local function at(p)
    if n == 0 then return 0 end
    return values[math.max(1, math.ceil(p / 100 * n))]
  end
  return string.format('{"count": %d, "p50": %d, "p90": %d, "p99": %d, "max": %d}',
    n, at(50), at(90), at(99), at(100))
end

function done(summary, latency, requests)
  local all = { ok = {}, shed = {}, other = {} }
  local codes, lost = {}, 0
  for _, thread in ipairs(threads) do
    for name, into in pairs(all) do
      for _, value in ipairs(thread:get(name)) do into[#into + 1] = value end
    end
    for code, count in pairs(thread:get("statuses")) do
      codes[code] = (codes[code] or 0) + count
    end
    lost = lost + thread:get("unmatched")
  end
  local code_list = {}
  for code, count in pairs(codes) do
    code_list[#code_list + 1] = string.format('"%s": %d', code, count)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_OVERLOAD_JSON {"duration_us": %d, "requests": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"statuses": {%s}, "unmatched": %d, "ok": %s, "shed": %s, "other": %s}\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.timeout,
    table.concat(code_list, ", "), lost,
    percentiles(all.ok), percentiles(all.shed), percentiles(all.other)))
end
