-- Prints wrk's result as one JSON object (same keys as `streamgate-bench http`).
done = function(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"kind":"http","tool":"wrk","requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
    '"errors":%d,"status_other":%d,"bytes":%d,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, secs, summary.requests / secs,
    e.connect + e.read + e.write + e.timeout, e.status, summary.bytes,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000))
end
