-- The home feed (20 newest posts) of random signed-in users.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local b = require("common")
setup, done = b.setup, b.done
function init() b.init(); b.load_tokens() end
function request() return b.feed(b.someone()) end
