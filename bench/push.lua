-- wrk script: POST bodies of 100 realistic records (six fields of mixed types).
-- usage: wrk -s bench/push.lua URL -- PATH FORMAT MIX BASE PREFILLED [TOKEN]
--   FORMAT     importapi (an array of data points with "keys") | datasette ({"rows": [...]})
--   MIX        ascending (new keys in order) | random (new keys in random order)
--              | replace (half the records replace one of PREFILLED existing keys)
--   BASE       the first new key
local counter = 0
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  path = args[1]
  format = args[2] or "importapi"
  mix = args[3] or "ascending"
  base = tonumber(args[4] or "0")
  prefilled = tonumber(args[5] or "0")
  token = args[6] or ""
  nthreads = 2
  math.randomseed(tid * 7919 + base + 1)
  keys = (format == "importapi") and '"keys":["id"],' or ""
end

local function record(id)
  return string.format(
    '{%s"id":%d,"name":"customer %d","email":"user%d@example.com","amount":%d.25,"active":%s,"created_at":"2024-05-%02d 12:34:56"}',
    keys, id, id, id, id % 1000, (id % 2 == 0) and "true" or "false", id % 28 + 1)
end

function request()
  local parts = {}
  local step = ((counter * nthreads) + tid) * 100
  for i = 0, 99 do
    local id
    if mix == "random" then
      id = base + math.random(1, 2000000000)
    elseif mix == "replace" and i % 2 == 0 then
      id = math.random(0, prefilled - 1)
    else
      id = base + step + i
    end
    parts[#parts + 1] = record(id)
  end
  counter = counter + 1
  local body = "[" .. table.concat(parts, ",") .. "]"
  local headers = {["Content-Type"] = "application/json"}
  if format == "datasette" then
    body = '{"rows":' .. body .. '}'
    headers["Authorization"] = "Bearer " .. token
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors=%d non2xx=%d duration_us=%d p50=%d p95=%d p99=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
