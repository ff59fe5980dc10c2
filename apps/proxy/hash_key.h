#pragma once
// What a Maglev pool hashes in ringpoll-proxy's HTTP mode (a pool's hash_key): the client's
// address (the L4 relay's key too), a request header's value or a cookie's. The same value
// gives the same key on every proxy of a fleet (apps/proxy/pool.h's text_key), so a user's
// requests reach the same upstream whichever proxy and connection they come through; a
// request without the value is hashed on its client's address instead (counted per route:
// ringpoll_proxy_http_hash_fallbacks_total).
//
// Reading the value from a request head (plain C++, no engine: the fuzz build links it):
//   - header: every field of that name, compared without regard to case; several are one
//     list (RFC 9110 5.3): their values joined with ", ";
//   - cookie: the Cookie fields' pairs (RFC 6265 5.4: "name=value" separated by ";", one
//     field or several), the first pair whose name is exactly NAME (cookie names keep
//     their case); a value in double quotes stands for what is between them;
//   - an empty value is no value (hashing "" would send every such request to one upstream).
#include <cstdint>
#include <string>
#include <string_view>

namespace ringpoll::proxy {

enum class HashSource : uint8_t { kClient, kHeader, kCookie };

struct HashKey {
  HashSource source = HashSource::kClient;
  std::string name;  // the header's or the cookie's (kClient: empty)
  bool operator==(const HashKey&) const = default;
};

// The value `k` names in request head `head` (request line, fields, the empty line) into
// *out; false when the request has none (or k is kClient).
bool hash_key_value(std::string_view head, const HashKey& k, std::string* out);

// The value of cookie `name` in one Cookie field's value; false when it has none.
bool cookie_value(std::string_view field, std::string_view name, std::string_view* out);

}  // namespace ringpoll::proxy
