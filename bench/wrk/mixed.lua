-- 90% reads (feeds and profiles, half each), 10% writes (follow 4%, unfollow 3%, post 3%).
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local b = require("common")
setup, done = b.setup, b.done
function init() b.init(); b.load_tokens() end
function request()
  local r, i = math.random(100), b.someone()
  if r <= 45 then return b.feed(i)
  elseif r <= 90 then return b.profile()
  elseif r <= 94 then return b.follow(i)
  elseif r <= 97 then return b.unfollow(i)
  else return b.post(i) end
end
