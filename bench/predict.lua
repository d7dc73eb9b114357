-- wrk script: POST /predict, cycling through the JSON bodies in the file given after `--`
-- (one customer per line), and print a machine-readable summary when done. Arguments after the
-- file are extra headers, "Name: value" each (an API key, an Origin).
local reqs = {}
local i = 0

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for k = 2, #args do
    local name, value = string.match(args[k], "^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  for line in io.lines(args[1]) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("POST", "/predict", headers, line)
    end
  end
  assert(#reqs > 0, "no request bodies in " .. tostring(args[1]))
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
