-- Profiles of random users, user 1 (a million followers at scale 1) included.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local b = require("common")
setup, done = b.setup, b.done
function init() b.init() end
function request() return b.profile() end
