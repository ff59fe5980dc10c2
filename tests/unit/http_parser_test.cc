// ringpoll-serve's HTTP/1.1 request parser and its responses: the same requests
// whatever the split, the limits (414, 431), the refusals (400, 501, 505),
// bodies skipped so a pipeline stays in step, keep-alive rules, and the routes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/http/request_parser.h"
#include "apps/http/response.h"

namespace ringpoll::http {
namespace {

using R = RequestParser::Result;

struct Seen {
  std::string method;
  std::string target;
  int minor = 0;
  bool keep_alive = false;
  uint64_t content_length = 0;
  bool operator==(const Seen&) const = default;
  friend void PrintTo(const Seen& s, std::ostream* os) {
    *os << s.method << ' ' << s.target << " 1." << s.minor << (s.keep_alive ? " keep" : " close")
        << " len " << s.content_length;
  }
};

struct Outcome {
  std::vector<Seen> requests;
  ParseError error = ParseError::kNone;
};

// Feeds `pieces` in order, taking every request out as it completes.
Outcome feed_pieces(const std::vector<std::string>& pieces, ParserLimits limits = {}) {
  RequestParser p(limits);
  Outcome o;
  for (const std::string& piece : pieces) {
    const char* d = piece.data();
    size_t n = piece.size();
    // Each feed either takes bytes or ends this piece: at most one round per
    // byte + 1.
    for (size_t round = 0; round <= piece.size() + 1; ++round) {
      size_t used = 0;
      const R r = p.feed(d, n, &used);
      EXPECT_LE(used, n);
      d += used;
      n -= used;
      if (r == R::kError) {
        o.error = p.error();
        return o;
      }
      if (r == R::kNeedMore) {
        EXPECT_EQ(n, 0u);
        break;
      }
      const Request& q = p.request();
      o.requests.push_back(Seen{std::string(q.method_name), std::string(q.target), q.version_minor,
                                q.keep_alive, q.content_length});
      if (n == 0) break;
    }
  }
  return o;
}

Outcome feed_whole(const std::string& wire, ParserLimits limits = {}) {
  return feed_pieces({wire}, limits);
}

Outcome feed_bytewise(const std::string& wire, ParserLimits limits = {}) {
  std::vector<std::string> pieces;
  for (char c : wire) pieces.emplace_back(1, c);
  return feed_pieces(pieces, limits);
}

const std::string kPipeline =
    "GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"
    "POST /upload?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nGET / "
    "HTTP/1"
    "HEAD /bytes/5 HTTP/1.1\r\nhost: a\r\nCONNECTION: Keep-Alive, "
    "Upgrade\r\n\r\n"
    "GET /old HTTP/1.0\r\nConnection: keep-alive\r\nX-Long: " +
    std::string(300, 'v') +
    "\r\n\r\n"
    "GET /last HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";

const std::vector<Seen> kPipelineRequests = {
    {"GET", "/plaintext", 1, true, 0}, {"POST", "/upload?x=1", 1, true, 12},
    {"HEAD", "/bytes/5", 1, true, 0},  {"GET", "/old", 0, true, 0},
    {"GET", "/last", 1, false, 0},
};

TEST(HttpParser, PipelinedRequestsSplitAtEveryByteBoundaryGiveTheSameRequests) {
  const Outcome whole = feed_whole(kPipeline);
  ASSERT_EQ(whole.error, ParseError::kNone);
  EXPECT_EQ(whole.requests, kPipelineRequests);
  for (size_t cut = 0; cut <= kPipeline.size(); ++cut) {
    const Outcome two = feed_pieces({kPipeline.substr(0, cut), kPipeline.substr(cut)});
    ASSERT_EQ(two.error, ParseError::kNone) << "cut at " << cut;
    ASSERT_EQ(two.requests, kPipelineRequests) << "cut at " << cut;
  }
  const Outcome bytewise = feed_bytewise(kPipeline);
  EXPECT_EQ(bytewise.error, ParseError::kNone);
  EXPECT_EQ(bytewise.requests, kPipelineRequests);
}

TEST(HttpParser, RequestLineLongerThanTheLimitIs414) {
  ParserLimits lim;
  lim.max_request_line = 64;
  // "GET " + target + " HTTP/1.1" is exactly 64 bytes: accepted; one more byte:
  // 414.
  const std::string at_limit = "GET /" + std::string(64 - 14, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  const std::string over = "GET /" + std::string(64 - 13, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  EXPECT_EQ(feed_whole(at_limit, lim).requests.size(), 1u);
  EXPECT_EQ(feed_whole(over, lim).error, ParseError::kUriTooLong);
  EXPECT_EQ(feed_bytewise(over, lim).error, ParseError::kUriTooLong);
  // A target that never ends is refused as soon as it passes the limit.
  EXPECT_EQ(feed_whole("GET /" + std::string(1000, 'a'), lim).error, ParseError::kUriTooLong);
  EXPECT_EQ(status_code(ParseError::kUriTooLong), 414);
}

TEST(HttpParser, HeadersBeyondTheLimitAre431) {
  ParserLimits lim;
  lim.max_header_bytes = 256;
  const std::string big =
      "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(300, 'b') + "\r\n\r\n";
  EXPECT_EQ(feed_whole(big, lim).error, ParseError::kHeadersTooLarge);
  EXPECT_EQ(feed_bytewise(big, lim).error, ParseError::kHeadersTooLarge);
  // Many small headers count together.
  std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 40; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(feed_whole(many + "\r\n", lim).error, ParseError::kHeadersTooLarge);
  // Within the limit: fine.
  EXPECT_EQ(feed_whole("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(200, 'b') + "\r\n\r\n", lim)
                .requests.size(),
            1u);
  EXPECT_EQ(status_code(ParseError::kHeadersTooLarge), 431);
}

TEST(HttpParser, MalformedRequestsAre400) {
  const std::vector<std::string> bad = {
      "GET\r\n\r\n",                                   // no target, no version
      "GET /\r\nHost: a\r\n\r\n",                      // missing version
      "GET / \r\nHost: a\r\n\r\n",                     // empty version
      "GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",       // trailing junk
      "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",            // empty target
      "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",             // bad method token
      " GET / HTTP/1.1\r\nHost: a\r\n\r\n",            // leading blank
      "GET /a\x01z HTTP/1.1\r\nHost: a\r\n\r\n",       // control character in target
      "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",  // raw non-ASCII in target
      "GET / HTTX/1.1\r\nHost: a\r\n\r\n",             // bad protocol name
      "GET / HTTP/1\r\nHost: a\r\n\r\n",               // short version
      "GET / HTTP/1.10\r\nHost: a\r\n\r\n",            // long version
      "GET / HTTP/1.1\nHost: a\r\n\r\n",               // bare LF after the request line
      "GET / HTTP/1.1\r\nHost: a\n\r\n",               // bare LF after a header
      "GET / HTTP/1.1\r\nHost: a\r\n\n",               // bare LF ending the head
      "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",           // CR not followed by LF
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",            // blank before the colon
      "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  // obsolete line folding
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",             // header without a colon
      "GET / HTTP/1.1\r\n: v\r\nHost: a\r\n\r\n",      // empty header name
      std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
                  35),                                  // NUL in a value
      "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n",  // DEL in a value
      "GET / HTTP/1.1\r\n\r\n",                         // HTTP/1.1 without Host
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",   // two Hosts
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
      "99999999999999999999999\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: "
      "4\r\n\r\n",
  };
  for (const std::string& w : bad) {
    EXPECT_EQ(feed_whole(w).error, ParseError::kBadRequest) << testing::PrintToString(w);
    EXPECT_EQ(feed_bytewise(w).error, ParseError::kBadRequest) << testing::PrintToString(w);
  }
  EXPECT_EQ(status_code(ParseError::kBadRequest), 400);
}

TEST(HttpParser, OtherVersionsAre505AndTransferEncodingIs501) {
  EXPECT_EQ(feed_whole("GET / HTTP/2.0\r\nHost: a\r\n\r\n").error,
            ParseError::kVersionNotSupported);
  EXPECT_EQ(feed_whole("GET / HTTP/0.9\r\n\r\n").error, ParseError::kVersionNotSupported);
  EXPECT_EQ(feed_whole("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n0\r\n\r\n")
                .error,
            ParseError::kNotImplemented);
  EXPECT_EQ(status_code(ParseError::kNotImplemented), 501);
  EXPECT_EQ(status_code(ParseError::kVersionNotSupported), 505);
  // HTTP/1.2 and later minors are answered as 1.1.
  const Outcome o = feed_whole("GET / HTTP/1.2\r\nHost: a\r\n\r\n");
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].minor, 2);
  EXPECT_TRUE(o.requests[0].keep_alive);
}

TEST(HttpParser, ContentLengthBodiesAreSkippedSoThePipelineStaysInStep) {
  // The body looks like a request; it must not be taken for one.
  const std::string body = "GET /evil HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string wire =
      "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body +
      "GET /b HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
  for (const Outcome& o : {feed_whole(wire), feed_bytewise(wire)}) {
    ASSERT_EQ(o.error, ParseError::kNone);
    ASSERT_EQ(o.requests.size(), 2u);
    EXPECT_EQ(o.requests[0].target, "/a");
    EXPECT_EQ(o.requests[0].content_length, body.size());
    EXPECT_EQ(o.requests[1].target, "/b");
    EXPECT_EQ(o.requests[1].content_length, 0u);
  }
  // The body is not part of the request head: a request whose body has not
  // arrived is returned already, and the parser reports what is left to skip.
  RequestParser p;
  const std::string head = "PUT /c HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
  size_t used = 0;
  ASSERT_EQ(p.feed(head.data(), head.size(), &used), R::kRequest);
  EXPECT_EQ(used, head.size());
  EXPECT_EQ(p.body_left(), 10u);
  EXPECT_FALSE(p.reading_head());
  ASSERT_EQ(p.feed("0123456", 7, &used), R::kNeedMore);
  EXPECT_EQ(p.body_left(), 3u);
  ASSERT_EQ(p.feed("789", 3, &used), R::kNeedMore);
  EXPECT_TRUE(p.idle());
}

TEST(HttpParser, KeepAliveFollowsTheVersionAndTheConnectionHeader) {
  struct Case {
    const char* head;
    bool keep_alive;
  };
  const Case cases[] = {
      {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade,close\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nHost: a\r\nX-Connection: close\r\n\r\n", true},
      {"GET / HTTP/1.0\r\n\r\n", false},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
      {"GET / HTTP/1.0\r\nConnection:  Keep-Alive \r\n\r\n", true},
      {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
      {"GET / HTTP/1.0\r\nHost: a\r\nConnection: close\r\n\r\n", false},
  };
  for (const Case& c : cases) {
    const Outcome o = feed_whole(c.head);
    ASSERT_EQ(o.requests.size(), 1u) << c.head;
    EXPECT_EQ(o.requests[0].keep_alive, c.keep_alive) << c.head;
  }
}

TEST(HttpParser, ErrorsAreStickyAndEmptyLinesBeforeARequestAreSkipped) {
  RequestParser p;
  size_t used = 99;
  ASSERT_EQ(p.feed("BAD\x01", 4, &used), R::kError);
  EXPECT_LE(used, 4u);
  EXPECT_EQ(p.feed("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, &used), R::kError);
  EXPECT_EQ(used, 0u);
  p.reset();
  const Outcome o = feed_whole("\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(o.requests.size(), 1u);
  EXPECT_EQ(o.requests[0].target, "/x");
}

TEST(HttpParser, ReadingHeadCoversTheFirstByteToTheEndOfTheHeaders) {
  RequestParser p;
  EXPECT_TRUE(p.idle());
  EXPECT_FALSE(p.reading_head());
  size_t used = 0;
  ASSERT_EQ(p.feed("G", 1, &used), R::kNeedMore);
  EXPECT_TRUE(p.reading_head());
  const std::string rest = "ET / HTTP/1.1\r\nHost: a\r\n";
  ASSERT_EQ(p.feed(rest.data(), rest.size(), &used), R::kNeedMore);
  EXPECT_TRUE(p.reading_head());
  ASSERT_EQ(p.feed("\r\n", 2, &used), R::kRequest);
  EXPECT_TRUE(p.idle());
  EXPECT_EQ(p.request().method, Method::kGet);
}

TEST(HttpResponse, RoutesPlaintextBytesNotFoundAndMethods) {
  Request r;
  r.method = Method::kGet;
  r.version_minor = 1;
  r.keep_alive = true;
  r.target = "/plaintext?cache=no";
  Response resp = respond_to(r);
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.text, "Hello, World!");
  EXPECT_EQ(resp.connection, ConnectionHeader::kNone);
  std::string out;
  EXPECT_EQ(append_response(out, resp, 0), 0u);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 200 OK\r\nServer: ringpoll\r\nDate: ")) << out;
  EXPECT_NE(out.find("\r\nContent-Type: text/plain\r\nContent-Length: "
                     "13\r\n\r\nHello, World!"),
            std::string::npos)
      << out;

  r.target = "/bytes/0";
  resp = respond_to(r);
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.length, 0u);
  r.target = "/bytes/67108864";
  resp = respond_to(r);
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(resp.length, kMaxBytesBody);
  out.clear();
  EXPECT_EQ(append_response(out, resp, 65536),
            kMaxBytesBody);  // left for the caller
  EXPECT_TRUE(out.ends_with("Content-Length: 67108864\r\n\r\n")) << out;
  r.target = "/bytes/3000";
  out.clear();
  EXPECT_EQ(append_response(out, respond_to(r), 65536), 0u);
  EXPECT_TRUE(out.ends_with("\r\n\r\n" + std::string(3000, 'x')));
  for (const char* t : {"/bytes/67108865", "/bytes/abc", "/bytes/", "/bytes/-1", "/bytes/1x"}) {
    r.target = t;
    EXPECT_EQ(respond_to(r).status, 400) << t;
  }
  r.target = "/nothing";
  EXPECT_EQ(respond_to(r).status, 404);

  r.method = Method::kHead;
  r.target = "/plaintext";
  out.clear();
  append_response(out, respond_to(r), 0);
  EXPECT_TRUE(out.ends_with("Content-Length: 13\r\n\r\n")) << out;  // headers only

  r.method = Method::kOther;
  r.method_name = "POST";
  resp = respond_to(r);
  EXPECT_EQ(resp.status, 405);
  out.clear();
  append_response(out, resp, 0);
  EXPECT_NE(out.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos) << out;

  r.method = Method::kGet;
  r.version_minor = 0;
  EXPECT_EQ(respond_to(r).connection, ConnectionHeader::kKeepAlive);
  r.keep_alive = false;
  EXPECT_EQ(respond_to(r).connection, ConnectionHeader::kClose);
}

TEST(HttpResponse, ErrorsCloseAndDatesAreImfFixdate) {
  std::string out;
  append_error(out, 431);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n")) << out;
  EXPECT_NE(out.find("\r\nConnection: close\r\n"), std::string::npos);
  EXPECT_TRUE(out.ends_with("\r\n\r\nRequest Header Fields Too Large\n"));
  EXPECT_EQ(format_http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(current_http_date().size(), 29u);
}

}  // namespace
}  // namespace ringpoll::http
