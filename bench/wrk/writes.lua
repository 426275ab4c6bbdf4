-- Write throughput: follow and post commands, half each, by random signed-in users.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local b = require("common")
setup, done = b.setup, b.done
function init() b.init(); b.load_tokens() end
function request()
  local i = b.someone()
  if math.random(2) == 1 then return b.follow(i) else return b.post(i) end
end
