-- written by ringpoll's bench harness: one parsable line at the end of the run
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "HARNESS requests=%d duration_us=%d errors=%d status_errors=%d p50=%.1f p99=%.1f p999=%.1f mean=%.1f\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50.0), latency:percentile(99.0), latency:percentile(99.9),
    latency.mean))
end
