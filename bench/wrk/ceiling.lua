-- The ceiling: murmur's own GET /healthz (no database, no work) under the same load.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local b = require("common")
setup, done = b.setup, b.done
local req
function init() req = wrk.format("GET", "/healthz") end
function request() return req end
