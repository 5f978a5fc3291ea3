-- wrk script for loadtests/cache.sh: the request every connection sends,
-- the same for every server measured.
--
--   CACHE_PATH    the path asked for (e.g. /obj-4096.bin)
--   CACHE_UNIQUE  "1": every request asks for a URL never asked before,
--                 CACHE_PATH?r=<CACHE_RUN>-<thread>-<n> (the origin, a
--                 static file server, ignores the query; a cache does not)
--   CACHE_RUN     a tag making the URLs of one wrk run differ from another's
--   CACHE_TALLY   "1": count the answers by status and cache verdict (the
--                 x-cache header of Outpost, X-Cache-Status of nginx) and
--                 print `VERDICT <status> <verdict|-> <count>` lines at
--                 the end. Only on the warm-up runs: wrk then hands every
--                 response's headers to Lua, which costs it CPU.

local threads = {}
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
  n = 0
  path = os.getenv("CACHE_PATH") or "/"
  unique = os.getenv("CACHE_UNIQUE") == "1"
  prefix = path .. "?r=" .. (os.getenv("CACHE_RUN") or "0") .. "-" .. tostring(tid) .. "-"
  fixed = wrk.format(nil, path)
end

function request()
  if unique then
    n = n + 1
    return wrk.format(nil, prefix .. n)
  end
  return fixed
end

if os.getenv("CACHE_TALLY") == "1" then
  function response(status, headers, body)
    local v = headers["x-cache"] or headers["X-Cache"] or headers["X-Cache-Status"] or "-"
    local k = status .. " " .. v
    counts[k] = (counts[k] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    if c then
      for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
    end
  end
  for k, v in pairs(total) do io.write(string.format("VERDICT %s %d\n", k, v)) end
end
