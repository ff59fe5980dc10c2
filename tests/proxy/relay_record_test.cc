// The record an upgrade moves an L4 relay with (apps/proxy/relay_record.h) and its
// transport (engine/handover.h send_connection / recv_connection): what goes in comes out,
// byte for byte, descriptors included; anything else is refused, saying what and where, and
// leaves no descriptor open.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "apps/proxy/relay_record.h"
#include "engine/handover.h"

namespace ringpoll::proxy {
namespace {

std::vector<std::byte> bytes_of(const std::string& s) {
  const auto* b = reinterpret_cast<const std::byte*>(s.data());
  return {b, b + s.size()};
}

RelayRecord sample() {
  RelayRecord r;
  r.listener = "front";
  r.pool = "back";
  r.upstream = "127.0.0.1:9000";
  r.idle_ns = 60'000'000'000;
  r.idle_left_ns = 12'345;
  // Bytes that look like the record's own syntax must not confuse it.
  r.up.pending = bytes_of(std::string("up 3 1\n\n\0ringpoll-relay 1\n", 26));
  r.down.pending = bytes_of("down");
  r.down.ended = true;
  return r;
}

// A decoder's refusals: each case's text is refused with its `want` in the message, which
// names the connection record, and the record given is left as it was.
struct Case {
  std::string text;
  std::string want;  // in the message
};
std::string replaced(std::string t, const std::string& from, const std::string& to) {
  t.replace(t.find(from), from.size(), to);
  return t;
}
template <class Record>
void expect_refused(const std::vector<Case>& cases, const Record& sample,
                    bool (*decode)(std::string_view, Record*, std::string*)) {
  for (const Case& c : cases) {
    Record r = sample;
    r.listener = "untouched";
    std::string w;
    EXPECT_FALSE(decode(c.text, &r, &w)) << c.want;
    EXPECT_NE(w.find(c.want), std::string::npos) << "want '" << c.want << "' in: " << w;
    EXPECT_NE(w.find("connection record"), std::string::npos) << w;
    EXPECT_EQ(r.listener, "untouched") << "a refused record changes nothing";
  }
}

TEST(RelayRecord, RoundTripsEveryField) {
  std::string why;
  const std::string text = encode_relay_record(sample(), &why);
  ASSERT_FALSE(text.empty()) << why;
  RelayRecord r;
  ASSERT_TRUE(decode_relay_record(text, &r, &why)) << why;
  const RelayRecord want = sample();
  EXPECT_EQ(r.listener, want.listener);
  EXPECT_EQ(r.pool, want.pool);
  EXPECT_EQ(r.upstream, want.upstream);
  EXPECT_EQ(r.idle_ns, want.idle_ns);
  EXPECT_EQ(r.idle_left_ns, want.idle_left_ns);
  EXPECT_EQ(r.up.pending, want.up.pending);
  EXPECT_FALSE(r.up.ended);
  EXPECT_EQ(r.down.pending, want.down.pending);
  EXPECT_TRUE(r.down.ended);
}

TEST(RelayRecord, BadRecordsAreRefusedNamingTheLine) {
  std::string why;
  const std::string good = encode_relay_record(sample(), &why);
  expect_refused<RelayRecord>(
      {
          {"", "line 1: no header line"},
          {"GET / HTTP/1.1\n", "line 1: not a relay record"},
          {replaced(good, "ringpoll-relay 1", "ringpoll-relay 2"),
           "line 1: version 2, this binary reads 1"},
          {replaced(good, "listener front", "listen front"), "line 2: expected 'listener ...'"},
          {replaced(good, "listener front", "listener "), "line 2: an empty listener name"},
          {replaced(good, "idle 60000000000 12345", "idle 5 6"), "line 5: expected 'idle"},
          {replaced(good, "idle 60000000000 12345", "idle x 1"), "line 5: expected 'idle"},
          {replaced(good, "up 26 0", "up 26 2"), "line 6: expected 'up <bytes> <0|1>'"},
          {replaced(good, "down 4 1", "down -4 1"), "line 7: expected 'down"},
          {replaced(good, "down 4 1\n\n", "down 4 1\nx\n"), "line 8: expected the empty line"},
          {good.substr(0, good.size() - 1), "says 26 + 4 buffered bytes and carries 29"},
          {good + "!", "says 26 + 4 buffered bytes and carries 31"},
          {good.substr(0, good.find("pool")), "line 3: missing 'pool'"},
      },
      sample(), decode_relay_record);
  RelayRecord nl = sample();
  nl.pool = "a\nb";
  EXPECT_EQ(encode_relay_record(nl, &why), "");
  EXPECT_NE(why.find("a name with a newline cannot be carried"), std::string::npos) << why;
}

// The HTTP keep-alive client's record (apps/proxy/http_move.h): the listener, what is left
// of its read deadline (or none) and the bytes it read past its last answered request.
HttpClientRecord http_sample() {
  HttpClientRecord r;
  r.listener = "web";
  r.deadline_left_ns = 4'321'000'000;
  // A pipelined request and the start of the next one, with the record's syntax in them.
  r.bytes = bytes_of("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nbytes 9\n\n");
  return r;
}

TEST(HttpClientRecord, RoundTripsEveryFieldAndIsToldFromARelayRecord) {
  std::string why;
  const std::string text = encode_http_record(http_sample(), &why);
  ASSERT_FALSE(text.empty()) << why;
  EXPECT_TRUE(is_http_record(text));
  EXPECT_FALSE(is_http_record(encode_relay_record(sample(), &why)));
  HttpClientRecord r;
  ASSERT_TRUE(decode_http_record(text, &r, &why)) << why;
  EXPECT_EQ(r.listener, "web");
  EXPECT_EQ(r.deadline_left_ns, 4'321'000'000);
  EXPECT_EQ(r.bytes, http_sample().bytes);
  HttpClientRecord none = http_sample();
  none.deadline_left_ns = -1;  // no read deadline
  none.bytes.clear();
  ASSERT_TRUE(decode_http_record(encode_http_record(none, &why), &r, &why)) << why;
  EXPECT_EQ(r.deadline_left_ns, -1);
  EXPECT_TRUE(r.bytes.empty());
  // A relay record is not an HTTP client's.
  EXPECT_FALSE(decode_http_record(encode_relay_record(sample(), &why), &r, &why));
  EXPECT_NE(why.find("line 1: not an HTTP client record"), std::string::npos) << why;
}

TEST(HttpClientRecord, BadRecordsAreRefusedNamingTheLine) {
  std::string why;
  const std::string good = encode_http_record(http_sample(), &why);
  expect_refused<HttpClientRecord>(
      {
          {"", "line 1: no header line"},
          {replaced(good, "ringpoll-http 1", "ringpoll-http 7"),
           "line 1: version 7, this binary reads 1"},
          {replaced(good, "listener web", "listener "), "line 2: an empty listener name"},
          {replaced(good, "listener web", "listen web"), "line 2: expected 'listener ...'"},
          {replaced(good, "deadline 4321000000", "deadline -5"),
           "line 3: expected 'deadline <left_ns>'"},
          {replaced(good, "deadline 4321000000", "deadline soon"), "line 3: expected 'deadline"},
          {replaced(good, "bytes 54\n", "bytes x\n"), "line 4: expected 'bytes <count>'"},
          {replaced(good, "bytes 54\n\n", "bytes 54\nx\n"), "line 5: expected the empty line"},
          {good.substr(0, good.size() - 1), "says 54 buffered bytes and carries 53"},
          {good + "!", "says 54 buffered bytes and carries 55"},
          {good.substr(0, good.find("deadline")), "line 3: missing 'deadline'"},
      },
      http_sample(), decode_http_record);
  HttpClientRecord nl = http_sample();
  nl.listener = "a\nb";
  EXPECT_EQ(encode_http_record(nl, &why), "");
  EXPECT_NE(why.find("a name with a newline cannot be carried"), std::string::npos) << why;
}

// A pair of SOCK_SEQPACKET sockets, as the upgrade uses.
struct Channel {
  int a = -1, b = -1;
  Channel() {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0) {
      a = sv[0];
      b = sv[1];
    }
  }
  ~Channel() {
    if (a >= 0) ::close(a);
    if (b >= 0) ::close(b);
  }
};

int open_fds() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += fcntl(fd, F_GETFD) >= 0 ? 1 : 0;
  return n;
}

TEST(RelayRecord, ALargeRecordTravelsInPartsWithBothDescriptors) {
  Channel ch;
  ASSERT_GE(ch.a, 0);
  RelayRecord r = sample();
  r.up.pending.resize(70'000);  // about 17 messages
  for (size_t i = 0; i < r.up.pending.size(); ++i)
    r.up.pending[i] = static_cast<std::byte>(i * 7 + 3);
  std::string why;
  const std::string text = encode_relay_record(r, &why);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  std::thread sender([&] {
    EXPECT_TRUE(send_connection(ch.a, text, {p[0], p[1]}, &why).ok()) << why;
  });
  std::string got;
  std::vector<int> fds;
  ASSERT_TRUE(recv_connection(ch.b, 5000, &got, &fds, &why).ok()) << why;
  sender.join();
  EXPECT_EQ(got, text);
  ASSERT_EQ(fds.size(), 2u);
  // The descriptors are the same pipe: what goes in one end comes out of the other.
  ASSERT_EQ(::write(p[1], "m", 1), 1);
  char c = 0;
  EXPECT_EQ(::read(fds[0], &c, 1), 1);
  EXPECT_EQ(c, 'm');
  for (int fd : fds) ::close(fd);
  ::close(p[0]);
  ::close(p[1]);
  // Then the end, with its text.
  ASSERT_TRUE(send_moves_end(ch.a, "moved 1 drained 0").ok());
  EXPECT_TRUE(recv_connection(ch.b, 5000, &got, &fds, &why).is(Errc::kEof));
  EXPECT_EQ(got, "moved 1 drained 0");
}

TEST(RelayRecord, ACutOrForeignRecordIsRefusedAndLeavesNoDescriptorOpen) {
  const int before = open_fds();
  std::string why, got;
  std::vector<int> fds;
  {
    Channel ch;
    // A first message that says 9000 bytes and carries 10, with two descriptors, then EOF.
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    const std::string head = "C9000:0123456789";
    ASSERT_TRUE(send_moves_end(ch.a, "").ok());  // an end first: kEof, nothing open
    EXPECT_TRUE(recv_connection(ch.b, 1000, &got, &fds, &why).is(Errc::kEof));
    EXPECT_TRUE(fds.empty());
    std::string w;
    ASSERT_TRUE(send_connection(ch.a, std::string(9000, 'y'), {sv[0], sv[1]}, &w).ok()) << w;
    ::close(sv[0]);
    ::close(sv[1]);
    // Receive it whole, then send a foreign message and a cut one.
    ASSERT_TRUE(recv_connection(ch.b, 1000, &got, &fds, &why).ok()) << why;
    EXPECT_EQ(got.size(), 9000u);
    for (int fd : fds) ::close(fd);
    fds.clear();
    ASSERT_EQ(::send(ch.a, "Zzz", 3, 0), 3);
    const Status foreign = recv_connection(ch.b, 1000, &got, &fds, &why);
    EXPECT_FALSE(foreign.ok());
    EXPECT_NE(why.find("not a connection record: 'Zzz'"), std::string::npos) << why;
    EXPECT_TRUE(fds.empty());
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    // The head only, with descriptors, by hand, then the sender closes.
    {
      msghdr m{};
      iovec iov{const_cast<char*>(head.data()), head.size()};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      alignas(cmsghdr) char ctl[CMSG_SPACE(2 * sizeof(int))];
      m.msg_control = ctl;
      m.msg_controllen = sizeof ctl;
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(2 * sizeof(int));
      std::memcpy(CMSG_DATA(c), sv, sizeof sv);
      ASSERT_EQ(::sendmsg(ch.a, &m, 0), static_cast<ssize_t>(head.size()));
    }
    ::close(sv[0]);
    ::close(sv[1]);
    ::close(std::exchange(ch.a, -1));
    const Status cut = recv_connection(ch.b, 1000, &got, &fds, &why);
    EXPECT_FALSE(cut.ok());
    EXPECT_NE(why.find("a connection record cut short at 10 of 9000 bytes"), std::string::npos)
        << why;
    EXPECT_TRUE(fds.empty());
    EXPECT_TRUE(got.empty());
  }
  EXPECT_EQ(open_fds(), before) << "a refused record leaves no descriptor open";
}

}  // namespace
}  // namespace ringpoll::proxy
