-- Shared by murmur's wrk scripts: the token file, random users, and a one-line JSON summary
-- (BENCH_JSON ...) that bench/run parses. Environment:
--   BENCH_TOKENS  token file written by `generate --tokens` (lines "<user id> <token>")
--   BENCH_USERS   number of users in the dataset (profiles are drawn from 1..BENCH_USERS)
--   BENCH_USER1_SHARE  share of profile reads that ask for user 1 (default 0.01)
local M = {}

M.users = tonumber(os.getenv("BENCH_USERS") or "1000")
M.user1_share = tonumber(os.getenv("BENCH_USER1_SHARE") or "0.01")
M.ids, M.auth = {}, {}

function M.load_tokens()
  local path = os.getenv("BENCH_TOKENS")
  if not path then error("BENCH_TOKENS is not set") end
  local file = assert(io.open(path, "r"))
  for line in file:lines() do
    local id, token = line:match("^(%d+) (%S+)$")
    if id then
      M.ids[#M.ids + 1] = tonumber(id)
      M.auth[#M.auth + 1] = { ["Authorization"] = "Bearer " .. token }
    end
  end
  file:close()
  if #M.ids == 0 then error("no tokens in " .. path) end
end

-- A signed-in user: index into ids/auth.
function M.someone()
  return math.random(#M.ids)
end

function M.profile()
  local id = 1
  if math.random() >= M.user1_share then id = math.random(M.users) end
  return wrk.format("GET", "/v1/users/" .. id)
end

function M.feed(i)
  return wrk.format("GET", "/v1/users/" .. M.ids[i] .. "/feed?limit=20", M.auth[i])
end

-- Someone other than user ids[i].
function M.other(i)
  local target = math.random(M.users)
  if target == M.ids[i] then target = target % M.users + 1 end
  return target
end

function M.follow(i)
  return wrk.format("PUT", "/v1/users/" .. M.ids[i] .. "/following/" .. M.other(i), M.auth[i])
end

function M.unfollow(i)
  return wrk.format("DELETE", "/v1/users/" .. M.ids[i] .. "/following/" .. M.other(i), M.auth[i])
end

local post_headers = {}
function M.post(i)
  post_headers["Authorization"] = M.auth[i]["Authorization"]
  post_headers["Content-Type"] = "application/json"
  local body = string.format('{"body":"load test post %d"}', math.random(1000000000))
  return wrk.format("POST", "/v1/posts", post_headers, body)
end

local counter = 0
function M.setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function M.init()
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

-- wrk counts a status above 399 in errors.status; 3xx never happen here.
function M.done(summary, latency, requests)
  local ms = function(us) return us / 1000.0 end
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"mean_ms":%.3f,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non2xx":%d,"timeouts":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d}\n',
    summary.requests, seconds, summary.requests / seconds, ms(latency.mean),
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency.max), summary.errors.status, summary.errors.timeout,
    summary.errors.connect, summary.errors.read, summary.errors.write))
end

return M
