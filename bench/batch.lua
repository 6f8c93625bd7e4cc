-- wrk: POST /v1/messages/batch with 1,000 single-part messages per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
local items = {}
for i = 1, 1000 do
  items[i] = string.format('{"to":"+1415890%04d","text":"batch benchmark %d"}', i - 1, i)
end
wrk.body = '{"messages":[' .. table.concat(items, ",") .. ']}'

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("ok"); o = o + t:get("other") end
  io.write(string.format("RESULT batches=%d other=%d p50_ms=%.3f p99_ms=%.3f\n", a, o,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
