// ringpoll-load's HTTP/1.x response parser: framing by Content-Length across arbitrary
// splits, pipelined responses, keep-alive rules, and the rejections the generator counts.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/load/http_response.h"

namespace ringpoll::load {
namespace {

using R = HttpResponseParser::Result;

struct Parsed {
  std::vector<int> statuses;
  std::vector<bool> keep_alive;
  HttpError error = HttpError::kNone;
  size_t leftover = 0;  // bytes fed but not consumed by a complete response
};

// Feeds `wire` in pieces of `step` bytes and collects every complete response.
Parsed feed_all(const std::string& wire, size_t step) {
  HttpResponseParser p;
  Parsed out;
  size_t pos = 0;
  while (pos < wire.size()) {
    size_t n = std::min(step, wire.size() - pos);
    const char* d = wire.data() + pos;
    while (n > 0) {
      size_t used = 0;
      const R r = p.feed(d, n, &used);
      d += used;
      n -= used;
      pos += used;
      if (r == R::kError) {
        out.error = p.error();
        return out;
      }
      if (r == R::kNeedMore) break;
      out.statuses.push_back(p.status());
      out.keep_alive.push_back(p.keep_alive());
    }
  }
  return out;
}

const std::string kHello =
    "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nServer: x\r\n\r\nHello, World!";

TEST(LoadHttpResponse, OneResponseInAnySplit) {
  for (size_t step = 1; step <= kHello.size(); ++step) {
    const Parsed p = feed_all(kHello, step);
    ASSERT_EQ(p.error, HttpError::kNone) << step;
    ASSERT_EQ(p.statuses.size(), 1u) << step;
    EXPECT_EQ(p.statuses[0], 200);
    EXPECT_TRUE(p.keep_alive[0]);
  }
}

TEST(LoadHttpResponse, PipelinedResponsesAreSeparated) {
  std::string wire;
  for (int i = 0; i < 5; ++i) wire += kHello;
  wire += "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
  wire += "HTTP/1.1 204 No Content\r\n\r\n";
  for (const size_t step : {size_t{1}, size_t{7}, size_t{64}, wire.size()}) {
    const Parsed p = feed_all(wire, step);
    ASSERT_EQ(p.error, HttpError::kNone);
    ASSERT_EQ(p.statuses.size(), 7u) << step;
    EXPECT_EQ(p.statuses[5], 404);
    EXPECT_EQ(p.statuses[6], 204);
  }
}

TEST(LoadHttpResponse, KeepAliveRules) {
  Parsed p = feed_all("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 5);
  ASSERT_EQ(p.statuses.size(), 1u);
  EXPECT_FALSE(p.keep_alive[0]);
  p = feed_all("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 5);
  ASSERT_EQ(p.statuses.size(), 1u);
  EXPECT_FALSE(p.keep_alive[0]);
  p = feed_all("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", 5);
  ASSERT_EQ(p.statuses.size(), 1u);
  EXPECT_TRUE(p.keep_alive[0]);
}

TEST(LoadHttpResponse, InterimResponsesAreSkipped) {
  const Parsed p = feed_all("HTTP/1.1 100 Continue\r\n\r\n" + kHello, 3);
  ASSERT_EQ(p.error, HttpError::kNone);
  ASSERT_EQ(p.statuses.size(), 1u);
  EXPECT_EQ(p.statuses[0], 200);
}

TEST(LoadHttpResponse, Rejections) {
  EXPECT_EQ(
      feed_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 4)
          .error,
      HttpError::kChunked);
  EXPECT_EQ(feed_all("HTTP/1.1 200 OK\r\n\r\nbody", 4).error, HttpError::kNoLength);
  EXPECT_EQ(feed_all("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 4).error,
            HttpError::kBadContentLength);
  EXPECT_EQ(feed_all("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 4).error,
            HttpError::kBadContentLength);
  EXPECT_EQ(feed_all("SSH-2.0-OpenSSH\r\n", 4).error, HttpError::kBadStatusLine);
  EXPECT_EQ(feed_all("HTTP/1.1 2x0 OK\r\n", 4).error, HttpError::kBadStatusLine);
  EXPECT_EQ(feed_all("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", 4).error, HttpError::kBadHeader);
  EXPECT_EQ(feed_all("HTTP/1.1 200 OK\r\nX: " + std::string(10000, 'a') + "\r\n\r\n", 512).error,
            HttpError::kLineTooLong);
  std::string many = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 200; ++i) many += "X-A: b\r\n";
  EXPECT_EQ(feed_all(many + "\r\n", 64).error, HttpError::kTooManyHeaders);
}

}  // namespace
}  // namespace ringpoll::load
