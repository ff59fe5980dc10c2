#pragma once
// What an HTTP listener of ringpoll-proxy (protocol = "http") is configured with: its route
// table and the HTTP-specific knobs (tuning keys under [[proxy.route]] and [proxy.http],
// tuning/README.md).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ringpoll::proxy {

// One route. A request takes the first route whose host, path prefix and method all
// match; a route with every match field empty is a default route.
struct HttpRoute {
  std::string name;
  // "" any; "example.com" that host exactly; "*.example.com" any name ending in
  // ".example.com". Compared case-insensitively, without the port.
  std::string host;
  std::string path_prefix;  // "" or "/" any; else the target must start with it
  std::string method;       // "" any; else exactly (methods are case-sensitive)
  std::string pool;         // the pool's name
  int pool_index = -1;      // resolved by settings_from_config / the caller
  int64_t connect_timeout_ns = 5'000'000'000;
  int64_t header_read_ns = 10'000'000'000;      // a client's next request head
  int64_t response_header_ns = 30'000'000'000;  // the upstream's response head
  int64_t idle_ns = 60'000'000'000;             // a body read or write that moves nothing
};

struct HttpSettings {
  std::vector<HttpRoute> routes;  // first match wins
  // Headers added to each request on its way upstream.
  bool x_forwarded = true;  // X-Forwarded-For (appended to) and X-Forwarded-Proto
  bool forwarded = false;   // RFC 7239 Forwarded: for=...;proto=...;host=...
  bool via = true;          // Via: 1.1 ringpoll (requests and responses)
  // Keep-alive upstream connections, per shard and upstream.
  size_t max_idle_per_upstream = 1024;
  uint32_t max_requests_per_connection = 10000;
  int64_t upstream_idle_ns = 30'000'000'000;  // an idle pooled connection is closed after this
};

}  // namespace ringpoll::proxy
