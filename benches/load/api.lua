-- POST /v1/conversions with BATCH items per request (env BATCH, default
-- 100), each with a uid and an order id of its own, so the engine sees
-- distinct sales rather than duplicates. Used by benches/load/api.sh.
local batch = tonumber(os.getenv("BATCH") or "100")
local key = os.getenv("API_KEY") or "bench-key-0123456789abcdef"
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function request()
  local items = {}
  for i = 1, batch do
    counter = counter + 1
    local n = thread_id * 1000000000 + counter
    items[i] = string.format(
      '{"pixel_id":7313,"uid":"%032x","order_id":"B%d","value":"19.99"}', n, n)
  end
  local body = '{"conversions":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/v1/conversions", {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }, body)
end

local rejected = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"rejected":0,', 1, true) then
    rejected = rejected + 1
  end
end

function done(summary, latency, requests)
  io.write(string.format("bad_answers %d\n", rejected))
end
