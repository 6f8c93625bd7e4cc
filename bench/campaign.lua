-- wrk: single-message POSTs as a collection campaign sends them: every request to another debtor
-- (+1 415 890 0000 upwards; the numbers cycle after 10,000 per thread), with its own Idempotency-Key
-- and the debtor's account as `reference`. Unlike post.lua (one number, no key), every accept extends
-- the store's lookup indexes by number, idempotency key and reference at a new place.
-- Counts 202s exactly and prints p50/p99 like post.lua.
local threads = {}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args) accepted = 0; other = 0; n = 0 end
function request()
  n = n + 1
  local debtor = (n * 7919 + id * 5003) % 10000
  local body = string.format(
    '{"to":"+1415890%04d","text":"Your account %d has a balance due. Call 1-800-555-0100. Reply STOP to opt out.","reference":"acct-%d-%d"}',
    debtor, debtor, id, debtor)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-token",
    ["Idempotency-Key"] = string.format("campaign-%d-%d", id, n),
  }
  return wrk.format("POST", nil, headers, body)
end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("RESULT accepted=%d other=%d p50_ms=%.3f p99_ms=%.3f\n", a, o,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
