// libFuzzer target for ringpoll-serve's HTTP/1.1 request parser (apps/http/).
//
// Input: byte 0 picks where the rest is cut in two, byte 1 picks the limits (small, so
// 414 and 431 are reached), the rest is the wire. The wire is parsed three ways — in the
// two chunks, whole, and (when short) one byte at a time — and each way must find the
// same requests and the same error: the parser's state between feeds must not change what
// it sees. Checked on every feed: consumed <= fed; "need more" consumed everything; a
// request has a non-empty method and target of visible ASCII within the request-line
// limit; an error has one of the documented statuses and stays (a later feed takes
// nothing). Every request is also answered into a buffer (respond_to, append_response).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/http/response.h"

namespace {

using ringpoll::http::ParseError;
using ringpoll::http::ParserLimits;
using ringpoll::http::Request;
using ringpoll::http::RequestParser;

// Inputs fed one byte at a time only up to this size (the cost is one feed per byte).
constexpr size_t kBytewiseMax = 4096;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http_fuzz: invariant broken: %s\n", what);
    std::abort();
  }
}

struct Outcome {
  std::vector<std::string> requests;  // one summary line per request
  ParseError error = ParseError::kNone;
  bool operator==(const Outcome&) const = default;
};

std::string summary(const Request& r) {
  std::string s(r.method_name);
  s += ' ';
  s += r.target;
  s += " 1." + std::to_string(r.version_minor);
  s += r.keep_alive ? " keep " : " close ";
  s += std::to_string(r.content_length);
  return s;
}

// Feeds the chunks in order and collects what the parser finds.
Outcome parse(const std::vector<std::string_view>& chunks, const ParserLimits& lim) {
  RequestParser p(lim);
  Outcome o;
  std::string answers;
  for (std::string_view chunk : chunks) {
    const char* d = chunk.data();
    size_t n = chunk.size();
    // Each round takes at least one byte or ends the chunk: at most n + 1 rounds, and
    // running out of rounds with bytes left would drop them unseen.
    bool chunk_done = false;
    for (size_t round = 0; round <= chunk.size() + 1 && !chunk_done; ++round) {
      size_t used = SIZE_MAX;
      const RequestParser::Result r = p.feed(d, n, &used);
      check(used <= n, "consumed <= fed");
      d += used;
      n -= used;
      if (r == RequestParser::Result::kNeedMore) {
        check(n == 0, "need more consumes everything");
        chunk_done = true;
        continue;
      }
      if (r == RequestParser::Result::kError) {
        o.error = p.error();
        const int st = ringpoll::http::status_code(o.error);
        check(st == 400 || st == 414 || st == 431 || st == 501 || st == 505, "error status");
        size_t again = SIZE_MAX;
        check(p.feed(d, n, &again) == RequestParser::Result::kError && again == 0,
              "errors are sticky");
        return o;
      }
      const Request& q = p.request();
      check(!q.method_name.empty() && !q.target.empty(), "method and target present");
      check(q.method_name.size() + q.target.size() + 10 <= lim.max_request_line,
            "request line within the limit");
      for (const char c : q.target) check(c > 0x20 && c < 0x7F, "target is visible ASCII");
      check(q.version_minor >= 0 && q.version_minor <= 9, "version digit");
      check(p.body_left() == q.content_length, "body left to skip is the Content-Length");
      o.requests.push_back(summary(q));
      answers.clear();
      (void)ringpoll::http::append_response(answers, ringpoll::http::respond_to(q), 0);
      check(answers.starts_with("HTTP/1.1 "), "an answer starts with a status line");
      chunk_done = n == 0;
    }
    check(chunk_done, "every byte of a chunk was consumed within n + 1 feeds");
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const std::string_view wire(reinterpret_cast<const char*>(data) + 2, size - 2);
  const size_t cut = wire.empty() ? 0 : data[0] % (wire.size() + 1);
  ParserLimits lim;
  lim.max_request_line = 16 + (data[1] & 0x0F) * 16;  // 16..256
  lim.max_header_bytes = 32 + (data[1] >> 4) * 64;    // 32..992

  const Outcome split = parse({wire.substr(0, cut), wire.substr(cut)}, lim);
  const Outcome whole = parse({wire}, lim);
  check(split == whole, "two chunks and one give the same requests");
  if (wire.size() <= kBytewiseMax) {
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < wire.size(); ++i) bytes.push_back(wire.substr(i, 1));
    check(parse(bytes, lim) == whole, "byte by byte gives the same requests");
  }
  return 0;
}
