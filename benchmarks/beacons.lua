-- wrk script: pixel beacons that vary as a site's traffic does, the same for nginx and
-- the collector. 4,096 requests are formatted once at start (so wrk's own cost per
-- request stays that of a fixed URL) and sent in turn: 800 products in 16 categories,
-- 8 referrers (search, social, e-mail campaign, internal, none), 2,000 visitors and as
-- many user ids; each request differs from the others in its query string.
local requests = {}
local n = 0

local referrers = {
  "https%3A%2F%2Fwww.google.com%2F", "https%3A%2F%2Fwww.bing.com%2F",
  "https%3A%2F%2Fwww.facebook.com%2F", "https%3A%2F%2Fshop.example%2F", "",
  "https%3A%2F%2Fnews.example%2Farticle%3Futm_source%3Dnews%26utm_medium%3Demail",
  "https%3A%2F%2Fduckduckgo.com%2F", "https%3A%2F%2Fshop.example%2Fcart",
}

function init(args)
  math.randomseed(42)
  for i = 1, 4096 do
    local product = math.random(1, 800)
    local category = "c" .. (product % 16)
    local path = "/i?s=shop&e=page_view"
      .. "&u=https%3A%2F%2Fshop.example%2F" .. category .. "%2Fp%2F" .. product
      .. "&r=" .. referrers[math.random(1, #referrers)]
      .. "&cat=" .. category .. "&pid=sku-" .. product
      .. "&uid=user-" .. math.random(1, 2000) .. "&ts=" .. (1763900000000 + i)
    local headers = { Cookie = string.format("tp_vid=%032x", math.random(1, 2000)) }
    requests[i] = wrk.format("GET", path, headers)
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end
