-- wrk script of the W5 storm (bench/storm.ts): POST /assign-task with an echo task, closed loop,
-- every answer (202, 429, 503) followed at once by the next request: Retry-After is ignored, as
-- most clients and proxies do. The key comes from the STORM_KEY environment variable.
wrk.method = "POST"
wrk.path = "/assign-task"
wrk.headers["content-type"] = "application/json"
local key = os.getenv("STORM_KEY")
if key and key ~= "" then wrk.headers["authorization"] = "Bearer " .. key end
wrk.body = '{"task_type":"echo","params":{"storm":true}}'

function done(summary, latency, requests)
  io.write(string.format("STORM requests=%d non2xx=%d\n", summary.requests, summary.errors.status))
end
