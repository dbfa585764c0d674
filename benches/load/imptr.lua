-- Uniquely numbered impressions from a browser with a cookie, as the
-- exported tag fires them once an ad server filled the placeholders.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
end

request = function()
  counter = counter + 1
  local path = "/imptr?id=2766&cachebuster=" .. (id or 0) .. "-" .. counter .. "&ancost=0.42&t=2"
  return wrk.format("GET", path, {
    -- Signed with the secret the load scripts configure.
    ["Cookie"] = "uid=0123456789abcdef0123456789abcdef.c4be6a563e1449ff",
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    ["Referer"] = "https://news.example.net/article/42",
  })
end
