-- wrk: single-message POST /v1/messages with a bearer token; counts 202s exactly (summed over threads)
-- and prints p50/p99 so bench.py can compare the 202s with the rows stored.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-token"
wrk.body = '{"to":"+14158906431","text":"benchmark message"}'

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) accepted = 0; other = 0 end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("RESULT accepted=%d other=%d p50_ms=%.3f p99_ms=%.3f\n", a, o,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
