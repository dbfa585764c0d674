-- The request mix of the load comparison (benches/load/compare.sh): what a
-- pixel server sees from pages, external ad servers and advertisers' sites.
-- Out of every 100 requests: 80 /imptr (the exported tag, filled in), 8
-- /clktrb with an encoded redir, 6 /px (4 image, 2 with an order and value),
-- 6 /seg; one in 7 comes without a cookie (a new browser). Cookies come from
-- a pool of signed ids ($PIXELD_COOKIES, one per line), so impressions,
-- clicks and conversions meet in the attribution engine.
--
-- The requests are formatted once per thread and cycled, so that the load
-- generator spends its core on sending, not on Lua.

local UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
local REFERER = "https://news.example.net/2026/11/autumn-collection-review?utm_source=home"
local requests = {}
local n = 0
local i = 0

local function cookies()
  local path = os.getenv("PIXELD_COOKIES")
  local out = {}
  if path then
    for line in io.lines(path) do out[#out + 1] = line end
  end
  if #out == 0 then out[1] = "uid=none" end
  return out
end

function init(args)
  local pool = cookies()
  local seed = math.random(1, 1000000)
  for k = 1, 5000 do
    local cb = seed .. "-" .. k
    local slot = k % 100
    local path
    if slot < 80 then
      path = "/imptr?id=2766&cachebuster=" .. cb .. "&ancost=0.42&t=2"
    elseif slot < 88 then
      path = "/clktrb?id=21378&cachebuster=" .. cb .. "&redir=https%3A%2F%2Fwww.example.com%2Fautumn-sale%3Fsrc%3Dad"
    elseif slot < 92 then
      path = "/px?id=7313&t=2"
    elseif slot < 94 then
      path = "/px?id=7313&t=2&order_id=ORD" .. cb .. "&value=19.99"
    else
      path = "/seg?add=12192&t=2"
    end
    local headers = { ["User-Agent"] = UA, ["Referer"] = REFERER }
    if k % 7 ~= 0 then
      headers["Cookie"] = pool[(k * 7919) % #pool + 1]
    end
    requests[k] = wrk.format("GET", path, headers)
  end
  n = #requests
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, _)
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"errors":%d,"non_2xx_3xx":%d,"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
