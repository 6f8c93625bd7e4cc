-- wrk: single-message POSTs as a collection campaign sends them: every request to another debtor
-- (+1 415 890 0000 upwards; the numbers cycle after 10,000 per thread), with its own Idempotency-Key
-- and the debtor's account as `reference`. Unlike post.lua (one number, no key), every accept extends
-- the store's lookup indexes by number, idempotency key and reference at a new place.
-- Counting the 202s and the RESULT line are post.lua's, loaded from beside this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "post.lua")

local counter = 0
local register = setup
function setup(thread)
  register(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local reset = init
function init(args)
  reset(args)
  n = 0
end

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
