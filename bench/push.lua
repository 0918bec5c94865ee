-- wrk script: POST bodies of 100 realistic records with ascending (or random) new keys.
-- usage: wrk -s bench/push.lua URL -- PATH [random]
local counter = 0
local threads = 0
local order = "ascending"

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  path = args[1]
  if args[2] then order = args[2] end
  nthreads = 2
  math.randomseed(tid * 7919 + 1)
end

local function record(id)
  return string.format(
    '{"keys":["id"],"id":%d,"name":"customer %d","email":"user%d@example.com","amount":%d.25,"active":%s,"created_at":"2024-05-%02d 12:34:56","visits":%d}',
    id, id, id, id % 1000, (id % 2 == 0) and "true" or "false", id % 28 + 1, id % 97)
end

function request()
  local parts = {}
  for i = 0, 99 do
    local id
    if order == "random" then
      id = math.random(1, 2000000000)
    else
      id = ((counter * nthreads) + tid) * 100 + i
    end
    parts[#parts + 1] = record(id)
  end
  counter = counter + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, "[" .. table.concat(parts, ",") .. "]")
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d non2xx=%d duration_us=%d p50=%d p95=%d p99=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
