// libFuzzer target for the readers of ringpoll-proxy's HTTP mode (apps/proxy/http_message.h
// and apps/http's RequestParser in proxy mode).
//
// Input: byte 0 picks the reader (even: requests, odd: a response head and a chunked
// body), byte 1 where the rest is cut in two; the rest is the wire. Checked:
//   requests  the parser in proxy mode finds the same requests and the same refusal fed
//             whole or in two pieces; every head it accepts, rewritten for an upstream
//             (rewrite_request_head), is accepted again by the same parser with the same
//             method, target and framing — the proxy never sends what it would refuse;
//   response  response_head_length never reads past what it was given; a head that
//             parses, rewritten for the client, measures and parses again to the same
//             status and framing;
//   chunked   ChunkedReader gives the same result and the same count of bytes taken fed
//             whole or in two pieces, never more than it was fed, and stops at the end.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/proxy/http_message.h"

namespace {

using ringpoll::http::ParserLimits;
using ringpoll::http::RequestParser;
namespace proxy = ringpoll::proxy;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http_proxy_fuzz: invariant broken: %s\n", what);
    std::abort();
  }
}

ParserLimits proxy_limits() {
  ParserLimits l;
  l.max_request_line = 512;
  l.max_header_bytes = 2048;
  l.proxy = true;
  return l;
}

struct Outcome {
  std::vector<std::string> requests;
  int refusal = -1;
  bool operator==(const Outcome&) const = default;
};

// The version as the proxy forwards it: HTTP/1.0, or HTTP/1.1 for any later 1.x.
std::string summary(const ringpoll::http::Request& r) {
  return std::string(r.method_name) + " " + std::string(r.target) +
         (r.version_minor == 0 ? " 1.0" : " 1.1") + (r.chunked ? " chunked " : " length ") +
         std::to_string(r.content_length);
}

// Heads only: the proxy relays bodies itself, so a head's body bytes are not fed here and
// the wire is read as heads back to back.
Outcome requests(const std::vector<std::string_view>& chunks, bool rewrite) {
  RequestParser p(proxy_limits());
  Outcome o;
  std::string pending;  // the current head's bytes, for the rewrite
  for (std::string_view c : chunks) {
    while (!c.empty()) {
      size_t used = 0;
      const auto r = p.feed(c.data(), c.size(), &used);
      check(used <= c.size(), "consumed <= fed");
      pending.append(c.substr(0, used));
      c.remove_prefix(used);
      if (r == RequestParser::Result::kNeedMore) break;
      if (r == RequestParser::Result::kError) {
        o.refusal = static_cast<int>(p.refusal());
        check(p.refusal() != ringpoll::http::Refusal::kNone, "a refusal names its rule");
        return o;
      }
      const auto& q = p.request();
      o.requests.push_back(summary(q));
      if (rewrite) {
        std::string_view head = pending;
        while (head.starts_with("\r\n")) head.remove_prefix(2);
        proxy::HttpSettings hs;
        hs.forwarded = true;
        proxy::ForwardInfo fi;
        fi.client_ip = "192.0.2.1";
        fi.s = &hs;
        fi.http10_upstream = q.version_minor == 0;
        std::string out;
        proxy::rewrite_request_head(head, fi, &out);
        ParserLimits big = proxy_limits();
        big.max_request_line = 1 << 20;
        big.max_header_bytes = 1 << 20;
        RequestParser again(big);
        size_t u = 0;
        check(again.feed(out.data(), out.size(), &u) == RequestParser::Result::kRequest,
              "a rewritten head parses again");
        check(u == out.size(), "a rewritten head is one head");
        check(summary(again.request()) == summary(q), "a rewritten head means the same");
      }
      pending.clear();
    }
  }
  return o;
}

void response(std::string_view wire, size_t cut) {
  const long n = proxy::response_head_length(wire.data(), wire.size(), 4096);
  check(n <= static_cast<long>(wire.size()), "a head within what was given");
  if (n > 0) {
    proxy::ResponseHead h;
    std::string why;
    if (proxy::parse_response_head(wire.substr(0, static_cast<size_t>(n)), false, &h, &why)) {
      proxy::HttpSettings hs;
      std::string out;
      proxy::rewrite_response_head(wire.substr(0, static_cast<size_t>(n)), hs, true, &out);
      check(proxy::response_head_length(out.data(), out.size(), 1 << 20) ==
                static_cast<long>(out.size()),
            "a rewritten head measures as one head");
      proxy::ResponseHead h2;
      check(proxy::parse_response_head(out, false, &h2, &why), "a rewritten head parses again");
      check(h2.status == h.status && (h2.framing == h.framing), "a rewritten head means the same");
    }
    wire.remove_prefix(static_cast<size_t>(n));
    cut = cut > static_cast<size_t>(n) ? cut - static_cast<size_t>(n) : 0;
  }
  cut = std::min(cut, wire.size());
  proxy::ChunkedReader whole, split;
  size_t uw = 0, u1 = 0, u2 = 0;
  const auto rw = whole.feed(wire.data(), wire.size(), &uw);
  check(uw <= wire.size(), "chunked: consumed <= fed");
  auto rs = split.feed(wire.data(), cut, &u1);
  if (rs == proxy::ChunkedReader::Result::kNeedMore)
    rs = split.feed(wire.data() + cut, wire.size() - cut, &u2);
  check(rs == rw, "chunked: the same result in two pieces");
  if (rw != proxy::ChunkedReader::Result::kError) check(u1 + u2 == uw, "chunked: same bytes taken");
  if (rw == proxy::ChunkedReader::Result::kNeedMore)
    check(uw == wire.size(), "need more takes all");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view wire(reinterpret_cast<const char*>(data) + 2, size - 2);
  const size_t cut = wire.empty() ? 0 : data[1] % (wire.size() + 1);
  if (data[0] % 2 == 0) {
    const Outcome whole = requests({wire}, true);
    check(requests({wire.substr(0, cut), wire.substr(cut)}, false) == whole,
          "two pieces and one give the same requests");
  } else {
    response(wire, cut);
  }
  return 0;
}
