// TlsStream on every socket backend (epoll, io_uring readiness, io_uring completion):
// handshakes (TLS 1.2 and 1.3, ECDSA and RSA, SNI, ALPN), data both ways with checksums,
// resumption across ticket-key rotations, half-close, deadlines, and bad peers (garbage,
// a stalled handshake, refused certificates, 10,000 abandoned handshakes).
#include "tls/tls_stream.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/test_env.h"
#include "tls/ktls.h"
#include "tls/tls_support.h"

namespace ringpoll::test {
namespace {

using tls::HandshakeError;
using tls::TlsContext;
using tls::TlsOptions;
using tls::TlsStream;

TlsOptions server_options() {
  const TestPki& pki = test_pki();
  TlsOptions o;
  o.certs = {{pki.path("ec.pem"), pki.path("ec.key")}};
  return o;
}
TlsOptions client_options() {
  TlsOptions o;
  o.ca_file = test_pki().path("ca.pem");
  return o;
}
std::unique_ptr<TlsContext> must(std::unique_ptr<TlsContext> c, const std::string& why) {
  EXPECT_TRUE(c) << why;
  return c;
}
std::unique_ptr<TlsContext> server_ctx(const TlsOptions& o) {
  std::string why;
  auto c = TlsContext::server(o, &why);
  return must(std::move(c), why);
}
std::unique_ptr<TlsContext> client_ctx(const TlsOptions& o) {
  std::string why;
  auto c = TlsContext::client(o, &why);
  return must(std::move(c), why);
}

// A checksum of a byte stream (FNV-1a), and the pattern both ends agree on.
uint64_t fnv(uint64_t h, std::span<const std::byte> b) {
  for (std::byte x : b) h = (h ^ static_cast<uint8_t>(x)) * 1099511628211ull;
  return h;
}
constexpr uint64_t kFnvStart = 1469598103934665603ull;
void fill_pattern(std::vector<std::byte>& v, uint32_t seed) {
  uint32_t x = seed;
  for (std::byte& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
}

template <class P>
Task<void> handshake_into(TlsStream<P>* t, int64_t deadline, HandshakeError* out, int* done) {
  *out = co_await t->handshake(deadline);
  ++*done;
}

// Writes `total` bytes of the pattern in pieces of `piece`, then half-closes.
template <class P>
Task<void> send_all(TlsStream<P>* t, size_t total, size_t piece, uint32_t seed, uint64_t* sum,
                    Status* st, int* done) {
  std::vector<std::byte> buf(total);
  fill_pattern(buf, seed);
  *sum = fnv(kFnvStart, buf);
  for (size_t off = 0; off < total;) {
    const size_t n = std::min(piece, total - off);
    const IoResult w = co_await t->write(std::span<const std::byte>(buf.data() + off, n));
    off += w.n;
    if (!w.ok()) {
      *st = w.err;
      break;
    }
  }
  if (st->ok()) *st = co_await t->shutdown_write();
  ++*done;
}
// Reads until end of stream, summing what arrives.
template <class P>
Task<void> recv_all(TlsStream<P>* t, uint64_t* sum, size_t* got, Status* st, int* done) {
  std::vector<std::byte> buf(24 * 1024);
  *sum = kFnvStart;
  for (;;) {
    const IoResult r = co_await t->read(buf);
    *sum = fnv(*sum, std::span<const std::byte>(buf.data(), r.n));
    *got += r.n;
    if (!r.ok()) {
      *st = r.err;
      break;
    }
  }
  ++*done;
}

// Appends what t reads to *saw until an error (end of stream), which it returns.
template <class P>
Task<Status> read_to_end(TlsStream<P>* t, std::string* saw) {
  std::array<std::byte, 256> b;
  for (;;) {
    const IoResult r = co_await t->read(b);
    saw->append(reinterpret_cast<const char*>(b.data()), r.n);
    if (!r.ok()) co_return r.err;
  }
}

template <class P>
class TlsStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!P::available().ok) GTEST_SKIP() << P::kName << ": " << P::available().why;
    ASSERT_TRUE(env.s.start().ok());
  }
  // A TCP pair on loopback: the server stream on one end, the client on the other, both
  // on env's scheduler.
  void connect(const TlsContext& sctx, const TlsContext& cctx, std::string_view name) {
    FdPair p;
    tcp_pair(p);
    // Fresh streams each time (a closed TcpStream is not reused); the old ones go first.
    server.reset();
    client.reset();
    ts = std::make_unique<TcpStream<P>>();
    tc = std::make_unique<TcpStream<P>>();
    ASSERT_TRUE(ts->adopt(env.s, p.take_a()).ok());
    ASSERT_TRUE(tc->adopt(env.s, p.take_b()).ok());
    server = std::make_unique<TlsStream<P>>();
    client = std::make_unique<TlsStream<P>>();
    ASSERT_TRUE(server->attach(env.s, *ts, sctx).ok());
    ASSERT_TRUE(client->attach(env.s, *tc, cctx, name).ok());
  }
  // Both handshakes at once; returns {server's, client's} results.
  std::pair<HandshakeError, HandshakeError> handshake(int64_t budget = 5 * kSec) {
    HandshakeError se = HandshakeError::kOther, ce = HandshakeError::kOther;
    int done = 0;
    const int64_t d = mono_now_ns() + budget;
    env.s.spawn(handshake_into<P>(server.get(), d, &se, &done));
    env.s.spawn(handshake_into<P>(client.get(), d, &ce, &done));
    EXPECT_TRUE(env.run_until([&] { return done == 2; }, budget + 5 * kSec));
    return {se, ce};
  }
  // One message client -> server -> client (the echo a ticket rides along with in 1.3).
  void round_trip(const std::string& msg) {
    int done = 0;
    std::string got(msg.size(), '\0');
    auto echo = [](TlsStream<P>* s, size_t n, int* d) -> Task<void> {
      std::vector<std::byte> b(n);
      const IoResult r = co_await s->read_exact(b);
      if (r.ok()) (void)co_await s->write(b);
      ++*d;
    };
    auto ask = [](TlsStream<P>* c, const std::string* m, std::string* out, int* d) -> Task<void> {
      (void)co_await c->write(std::string_view(*m));
      (void)co_await c->read_exact(std::as_writable_bytes(std::span(out->data(), out->size())));
      ++*d;
    };
    env.s.spawn(echo(server.get(), msg.size(), &done));
    env.s.spawn(ask(client.get(), &msg, &got, &done));
    ASSERT_TRUE(env.run_until([&] { return done == 2; }));
    EXPECT_EQ(got, msg);
  }
  void close_both() {
    int done = 0;
    auto cl = [](TlsStream<P>* s, TcpStream<P>* t, int* d) -> Task<void> {
      (void)co_await s->close();
      (void)co_await t->close();
      ++*d;
    };
    env.s.spawn(cl(server.get(), ts.get(), &done));
    env.s.spawn(cl(client.get(), tc.get(), &done));
    ASSERT_TRUE(env.run_until([&] { return done == 2; }));
  }

  Env<P> env;
  std::unique_ptr<TcpStream<P>> ts, tc;
  std::unique_ptr<TlsStream<P>> server, client;
};
TYPED_TEST_SUITE(TlsStreamTest, SocketBackendTypes, BackendName);

// 8 MiB each way at once, in odd-sized writes: both directions' flushes share the BIO pair
// (a reader that must send while the writer flushes), checksums equal at the far end.
TYPED_TEST(TlsStreamTest, Tls13EcdsaDataBothWaysWithChecksums) {
  using P = TypeParam;
  auto sctx = server_ctx(server_options());
  auto cctx = client_ctx(client_options());
  this->connect(*sctx, *cctx, "localhost");
  const auto [se, ce] = this->handshake();
  ASSERT_EQ(se, HandshakeError::kNone) << this->server->error_detail();
  ASSERT_EQ(ce, HandshakeError::kNone) << this->client->error_detail();
  EXPECT_STREQ(this->client->version(), "TLSv1.3");
  EXPECT_EQ(this->server->sni(), "localhost");
  constexpr size_t kTotal = 8 << 20;
  uint64_t sent[2], recv[2];
  size_t got[2] = {0, 0};
  Status wst[2], rst[2];
  int done = 0;
  this->env.s.spawn(send_all<P>(this->client.get(), kTotal, 100'003, 1, &sent[0], &wst[0], &done));
  this->env.s.spawn(send_all<P>(this->server.get(), kTotal, 65'537, 2, &sent[1], &wst[1], &done));
  this->env.s.spawn(recv_all<P>(this->server.get(), &recv[0], &got[0], &rst[0], &done));
  this->env.s.spawn(recv_all<P>(this->client.get(), &recv[1], &got[1], &rst[1], &done));
  ASSERT_TRUE(this->env.run_until([&] { return done == 4; }, 60 * kSec));
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(wst[i].ok()) << i << ": " << wst[i].message();
    EXPECT_TRUE(rst[i].is(Errc::kEof)) << i << ": " << rst[i].message();  // close_notify
    EXPECT_EQ(got[i], kTotal) << i;
    EXPECT_EQ(recv[i], sent[i]) << i;
  }
  EXPECT_FALSE(this->server->truncated());
  this->close_both();
}

// TLS 1.2 with an RSA suite from a server that holds an ECDSA and an RSA chain: OpenSSL
// picks the RSA one; an ECDSA-only 1.2 suite picks the other.
TYPED_TEST(TlsStreamTest, Tls12PicksRsaOrEcdsaCertificate) {
  const TestPki& pki = test_pki();
  TlsOptions so = server_options();
  so.certs.push_back({pki.path("rsa.pem"), pki.path("rsa.key")});
  auto sctx = server_ctx(so);
  for (const char* suite : {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"}) {
    SCOPED_TRACE(suite);
    TlsOptions co = client_options();
    co.ciphers = suite;
    auto cctx = client_ctx(co);
    this->connect(*sctx, *cctx, "127.0.0.1");
    SSL_set_max_proto_version(this->client->ssl(), TLS1_2_VERSION);
    const auto [se, ce] = this->handshake();
    ASSERT_EQ(se, HandshakeError::kNone) << this->server->error_detail();
    ASSERT_EQ(ce, HandshakeError::kNone) << this->client->error_detail();
    EXPECT_STREQ(this->client->version(), "TLSv1.2");
    EXPECT_STREQ(SSL_get_cipher_name(this->client->ssl()), suite);
    this->round_trip("tls 1.2");
    this->close_both();
  }
}

// SNI chooses the certificate (the client verifies b.example against it); ALPN agrees on
// the server's first choice the client offers.
TYPED_TEST(TlsStreamTest, SniChoosesCertificateAndAlpnAgrees) {
  const TestPki& pki = test_pki();
  TlsOptions so = server_options();
  so.sni = {{"b.example", {pki.path("sni.pem"), pki.path("sni.key")}}};
  so.alpn = {"h2", "http/1.1"};
  auto sctx = server_ctx(so);
  TlsOptions co = client_options();
  co.alpn = {"http/1.1", "h2"};
  auto cctx = client_ctx(co);
  this->connect(*sctx, *cctx, "b.example");
  auto [se, ce] = this->handshake();
  ASSERT_EQ(se, HandshakeError::kNone) << this->server->error_detail();
  ASSERT_EQ(ce, HandshakeError::kNone) << this->client->error_detail();
  EXPECT_EQ(this->server->sni(), "b.example");
  EXPECT_EQ(this->server->alpn(), "h2");
  EXPECT_EQ(this->client->alpn(), "h2");
  this->close_both();
  // "localhost" is not b.example: the default certificate, which names localhost.
  co.alpn = {"http/1.1"};
  auto cctx2 = client_ctx(co);
  this->connect(*sctx, *cctx2, "localhost");
  std::tie(se, ce) = this->handshake();
  ASSERT_EQ(ce, HandshakeError::kNone) << this->client->error_detail();
  EXPECT_EQ(this->client->alpn(), "http/1.1");
  this->close_both();
}

// Tickets: the second connection resumes; after one key rotation the previous key still
// decrypts; after two the ticket's key is gone and the handshake is a full one.
TYPED_TEST(TlsStreamTest, ResumptionSurvivesOneTicketKeyRotationNotTwo) {
  auto sctx = server_ctx(server_options());
  TlsOptions co = client_options();
  co.resume = true;
  for (const char* version : {"1.3", "1.2"}) {
    SCOPED_TRACE(version);
    auto cctx = client_ctx(co);
    const bool v12 = std::string(version) == "1.2";
    auto once = [&](const char* what) {
      this->connect(*sctx, *cctx, "localhost");
      if (v12) SSL_set_max_proto_version(this->client->ssl(), TLS1_2_VERSION);
      const auto [se, ce] = this->handshake();
      EXPECT_EQ(ce, HandshakeError::kNone) << what << ": " << this->client->error_detail();
      this->round_trip(what);  // TLS 1.3 tickets arrive after the handshake
      const bool r = this->client->resumed();
      EXPECT_EQ(r, this->server->resumed());
      this->close_both();
      return r;
    };
    EXPECT_FALSE(once("first"));
    EXPECT_TRUE(once("second"));
    sctx->rotate_ticket_keys();
    EXPECT_TRUE(once("after one rotation"));  // the previous key decrypts, a new ticket
    sctx->rotate_ticket_keys();
    EXPECT_TRUE(once("renewed ticket after a second rotation"));
    sctx->rotate_ticket_keys();
    sctx->rotate_ticket_keys();
    EXPECT_FALSE(once("after two more rotations"));
  }
}

// The client refuses an expired certificate, one for another host, and one from a CA it
// does not trust; the server sees the client's alert as a bad certificate too.
TYPED_TEST(TlsStreamTest, ClientRefusesExpiredWrongHostAndUnknownCa) {
  const TestPki& pki = test_pki();
  struct Case {
    const char* cert;
    const char* ca;
    const char* says;
  } cases[] = {
      {"expired", "ca.pem", "certificate has expired"},
      {"wronghost", "ca.pem", "hostname mismatch"},
      {"ec", "other-ca.pem", "unable to get local issuer certificate"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.cert);
    TlsOptions so;
    so.certs = {{pki.path((std::string(c.cert) + ".pem").c_str()),
                 pki.path((std::string(c.cert) + ".key").c_str())}};
    auto sctx = server_ctx(so);
    TlsOptions co = client_options();
    co.ca_file = pki.path(c.ca);
    auto cctx = client_ctx(co);
    this->connect(*sctx, *cctx, "localhost");
    const auto [se, ce] = this->handshake();
    EXPECT_EQ(ce, HandshakeError::kBadCertificate) << tls::to_string(ce);
    EXPECT_NE(std::string(this->client->error_detail()).find(c.says), std::string::npos)
        << this->client->error_detail();
    EXPECT_EQ(se, HandshakeError::kBadCertificate) << this->server->error_detail();
    this->close_both();
  }
}

// A server that wants TLS 1.3 and a client that stops at 1.2: both say protocol version.
TYPED_TEST(TlsStreamTest, VersionMismatchIsProtocolVersion) {
  TlsOptions so = server_options();
  so.min_version = tls::TlsVersion::k13;
  auto sctx = server_ctx(so);
  auto cctx = client_ctx(client_options());
  this->connect(*sctx, *cctx, "localhost");
  SSL_set_max_proto_version(this->client->ssl(), TLS1_2_VERSION);
  const auto [se, ce] = this->handshake();
  EXPECT_EQ(se, HandshakeError::kProtocolVersion) << this->server->error_detail();
  EXPECT_EQ(ce, HandshakeError::kProtocolVersion) << this->client->error_detail();
  this->close_both();
}

// Half-close: the client sends and shuts its side; the server reads it all, then end of
// stream, and still answers; the client reads the answer, then end of stream.
TYPED_TEST(TlsStreamTest, HalfCloseCarriesDataAfterClientShutdown) {
  auto sctx = server_ctx(server_options());
  auto cctx = client_ctx(client_options());
  this->connect(*sctx, *cctx, "localhost");
  const auto [se, ce] = this->handshake();
  ASSERT_EQ(ce, HandshakeError::kNone) << this->client->error_detail();
  using P = TypeParam;
  std::string server_saw, client_saw;
  Status server_end, client_end;
  int done = 0;
  auto srv = [](TlsStream<P>* s, std::string* saw, Status* end, int* d) -> Task<void> {
    *end = co_await read_to_end(s, saw);
    (void)co_await s->write(std::string_view("answer after half-close"));
    (void)co_await s->shutdown_write();
    ++*d;
  };
  auto cli = [](TlsStream<P>* c, std::string* saw, Status* end, int* d) -> Task<void> {
    (void)co_await c->write(std::string_view("request"));
    (void)co_await c->shutdown_write();
    *end = co_await read_to_end(c, saw);
    ++*d;
  };
  this->env.s.spawn(srv(this->server.get(), &server_saw, &server_end, &done));
  this->env.s.spawn(cli(this->client.get(), &client_saw, &client_end, &done));
  ASSERT_TRUE(this->env.run_until([&] { return done == 2; }));
  EXPECT_EQ(server_saw, "request");
  EXPECT_TRUE(server_end.is(Errc::kEof)) << server_end.message();
  EXPECT_EQ(client_saw, "answer after half-close");
  EXPECT_TRUE(client_end.is(Errc::kEof)) << client_end.message();
  this->close_both();
}

// A read deadline on a TLS stream is the TCP stream's: kTimeout, and the stream still
// works once the deadline is moved.
TYPED_TEST(TlsStreamTest, ReadDeadlineTimesOutThenStreamWorks) {
  using P = TypeParam;
  auto sctx = server_ctx(server_options());
  auto cctx = client_ctx(client_options());
  this->connect(*sctx, *cctx, "localhost");
  const auto [se, ce] = this->handshake();
  ASSERT_EQ(se, HandshakeError::kNone);
  Status st;
  int done = 0;
  auto rd = [](TlsStream<P>* s, Status* out, int* d) -> Task<void> {
    std::array<std::byte, 16> b;
    (void)s->set_read_deadline(mono_now_ns() + 50 * kMs);
    const IoResult r = co_await s->read(b);
    *out = r.err;
    (void)s->set_read_deadline(0);
    ++*d;
  };
  this->env.s.spawn(rd(this->server.get(), &st, &done));
  ASSERT_TRUE(this->env.run_until([&] { return done == 1; }));
  EXPECT_TRUE(st.is(Errc::kTimeout)) << st.message();
  this->round_trip("still works");
  this->close_both();
}

// ---- bad peers, against a listener that handshakes every connection it accepts ----

template <class P>
struct HandshakeServer {
  TcpListener<P> l;
  const TlsContext* ctx = nullptr;
  int64_t budget_ns = 2 * kSec;
  int finished = 0;
  int errors[8] = {};  // by HandshakeError
  bool stop = false;
};
template <class P>
Task<void> handshake_one(Scheduler<P>* s, HandshakeServer<P>* hs, int fd) {
  TcpStream<P> tcp;
  if (!tcp.adopt(*s, fd).ok()) {
    ::close(fd);
    co_return;
  }
  {
    TlsStream<P> t;
    HandshakeError e = HandshakeError::kOther;
    if (t.attach(*s, tcp, *hs->ctx).ok()) e = co_await t.handshake(mono_now_ns() + hs->budget_ns);
    ++hs->errors[static_cast<int>(e)];
    (void)co_await t.close();
  }
  (void)co_await tcp.close();
  ++hs->finished;
}
template <class P>
Task<void> accept_loop(Scheduler<P>* s, HandshakeServer<P>* hs) {
  while (!hs->stop) {
    const AcceptResult a = co_await hs->l.accept();
    if (!a.err.ok()) break;
    s->spawn(handshake_one<P>(s, hs, a.fd));
  }
}

// A connected, blocking client socket to 127.0.0.1:port.
int raw_client(uint16_t port) {
  const int fd = tcp_connect(port);
  if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

// The bytes of a real ClientHello (a client session's first flight, taken from a memory BIO).
std::string client_hello() {
  auto cctx = client_ctx(client_options());
  SSL* s = cctx->new_ssl("localhost");
  BIO* rb = BIO_new(BIO_s_mem());
  BIO* wb = BIO_new(BIO_s_mem());
  SSL_set_bio(s, rb, wb);
  SSL_set_connect_state(s);
  (void)SSL_do_handshake(s);
  char* p = nullptr;
  const long n = BIO_get_mem_data(wb, &p);
  std::string hello(p, static_cast<size_t>(n));
  SSL_free(s);
  return hello;
}

template <class P>
class TlsBadPeerTest : public TlsStreamTest<P> {
 protected:
  void start_server(int64_t budget_ns) {
    sctx = server_ctx(server_options());
    hs.ctx = sctx.get();
    hs.budget_ns = budget_ns;
    SocketAddress at;
    ASSERT_TRUE(parse_address("127.0.0.1:0", &at).ok());
    ListenOptions lo;
    lo.reuseport = false;
    ASSERT_TRUE(hs.l.listen(this->env.s, at, lo).ok());
    port = hs.l.local_address().port();
    this->env.s.spawn(accept_loop<P>(&this->env.s, &hs));
  }
  void stop_server() {
    hs.stop = true;
    int done = 0;
    auto cl = [](TcpListener<P>* l, int* d) -> Task<void> {
      (void)co_await l->close();
      ++*d;
    };
    this->env.s.spawn(cl(&hs.l, &done));
    ASSERT_TRUE(this->env.run_until([&] { return done == 1; }));
    this->env.settle();
  }
  // Runs the loop (a completion backend closes through the ring) until the client socket
  // c reads end of stream, skipping what the server sent before (an alert); false after 5 s.
  bool peer_closed(int c) {
    return this->env.run_until(
        [&] {
          char buf[256];
          const ssize_t n = ::recv(c, buf, sizeof buf, MSG_DONTWAIT);
          return n == 0 || (n < 0 && errno != EAGAIN);
        },
        5 * kSec);
  }
  std::unique_ptr<TlsContext> sctx;
  HandshakeServer<P> hs;
  uint16_t port = 0;
};
TYPED_TEST_SUITE(TlsBadPeerTest, SocketBackendTypes, BackendName);

// Plain HTTP, and random bytes, instead of a ClientHello: "not TLS", the connection closed.
TYPED_TEST(TlsBadPeerTest, GarbageInsteadOfHandshakeIsNotTls) {
  this->start_server(5 * kSec);
  const int fds = open_fd_count();
  std::string http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string noise(600, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>(i * 7919 % 251);
  for (const std::string* g : {&http, &noise}) {
    const int c = raw_client(this->port);
    ASSERT_GE(c, 0);
    ASSERT_EQ(::send(c, g->data(), g->size(), MSG_NOSIGNAL), static_cast<ssize_t>(g->size()));
    const int before = this->hs.finished;
    ASSERT_TRUE(this->env.run_until([&] { return this->hs.finished == before + 1; }));
    // The server closed: the client reads an alert or nothing, then end of stream.
    EXPECT_TRUE(this->peer_closed(c));
    ::close(c);
  }
  EXPECT_EQ(this->hs.errors[static_cast<int>(HandshakeError::kNotTls)], 2);
  EXPECT_EQ(open_fd_count(), fds);
  this->stop_server();
}

// Half a ClientHello, then nothing: closed at the handshake deadline, no descriptor left.
TYPED_TEST(TlsBadPeerTest, StalledHandshakeClosedAtDeadline) {
  this->start_server(300 * kMs);
  const int fds = open_fd_count();
  const std::string hello = client_hello();
  ASSERT_GT(hello.size(), 100u);
  const int c = raw_client(this->port);
  ASSERT_GE(c, 0);
  ASSERT_GT(::send(c, hello.data(), hello.size() / 2, MSG_NOSIGNAL), 0);
  const int64_t t0 = mono_now_ns();
  ASSERT_TRUE(this->env.run_until([&] { return this->hs.finished == 1; }));
  const int64_t took = mono_now_ns() - t0;
  EXPECT_EQ(this->hs.errors[static_cast<int>(HandshakeError::kTimeout)], 1);
  EXPECT_GE(took, 250 * kMs);
  EXPECT_LT(took, 3 * kSec);
  EXPECT_TRUE(this->peer_closed(c));    // the server's side is gone: end of stream
  EXPECT_EQ(open_fd_count(), fds + 1);  // only the client's own socket
  ::close(c);
  this->stop_server();
}

// 10,000 handshakes started (a real ClientHello) and abandoned (the client closes): every
// one ends as "peer closed", no descriptor is left and OpenSSL's heap is back where it was.
TYPED_TEST(TlsBadPeerTest, TenThousandAbandonedHandshakesLeaveNothing) {
  this->start_server(5 * kSec);
  const std::string hello = client_hello();
  // One warm-up connection: OpenSSL's lazily built tables (error strings, the provider's
  // algorithm cache) are then part of the baseline.
  {
    const int c = raw_client(this->port);
    ASSERT_GE(c, 0);
    ASSERT_GT(::send(c, hello.data(), hello.size(), MSG_NOSIGNAL), 0);
    ::close(c);
    ASSERT_TRUE(this->env.run_until([&] { return this->hs.finished == 1; }));
  }
  const int fds = open_fd_count();
  const int64_t heap = ssl_heap_bytes(0);
  constexpr int kN = 10'000;
  std::atomic<int> finished{1};
  std::atomic<bool> client_failed{false};
  std::thread client([&] {
    set_ssl_heap_tag(1);
    for (int i = 0; i < kN && !client_failed; ++i) {
      while (i - (finished.load() - 1) > 128) usleep(200);  // at most 128 in flight
      const int c = raw_client(this->port);
      if (c < 0 || ::send(c, hello.data(), hello.size(), MSG_NOSIGNAL) <= 0) client_failed = true;
      if (c >= 0) ::close(c);
    }
  });
  const bool all = this->env.run_until(
      [&] {
        finished = this->hs.finished;
        return this->hs.finished == kN + 1 || client_failed;
      },
      200 * kSec);
  client.join();
  ASSERT_FALSE(client_failed);
  ASSERT_TRUE(all) << this->hs.finished;
  const int closed = this->hs.errors[static_cast<int>(HandshakeError::kPeerClosed)];
  EXPECT_EQ(closed, kN + 1) << "not TLS " << this->hs.errors[5] << ", other " << this->hs.errors[7];
  EXPECT_EQ(open_fd_count(), fds);
  EXPECT_EQ(ssl_heap_bytes(0), heap);
  this->stop_server();
}

// What an idle TLS connection costs the server in OpenSSL's heap (its SSL object and the
// stream's two ciphertext buffers), after a handshake and a first request: OpenSSL's
// record buffers are released while idle (SSL_MODE_RELEASE_BUFFERS). Printed, and bounded:
// the two ciphertext buffers plus 16 KiB (the SSL object and its session: ~14 KiB measured).
TYPED_TEST(TlsBadPeerTest, IdleConnectionCostIsBounded) {
  using P = TypeParam;
  this->start_server(5 * kSec);
  this->stop_server();  // only the context is used: connections are made by hand below
  constexpr int kConns = 32;
  auto cctx = client_ctx(client_options());
  std::vector<std::unique_ptr<TcpStream<P>>> tcp;
  std::vector<std::unique_ptr<TlsStream<P>>> srv;
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  int fds[kConns][2];
  for (auto& p : fds) {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p), 0);
  }
  // The clients: blocking OpenSSL on their own thread (tag 1), one message each, then idle.
  std::thread client([&] {
    set_ssl_heap_tag(1);
    std::vector<SSL*> ss;
    for (auto& p : fds) {
      SSL* s = cctx->new_ssl("localhost");
      SSL_set_fd(s, p[1]);
      if (SSL_connect(s) == 1 && SSL_write(s, "ping", 4) == 4) ++ready;
      ss.push_back(s);
    }
    while (!stop) usleep(1000);
    for (SSL* s : ss) SSL_free(s);
  });
  const int64_t before = ssl_heap_bytes(0);
  int handshakes = 0, reads = 0;
  auto serve = [](TlsStream<P>* t, int* hs, int* rd) -> Task<void> {
    const HandshakeError e = co_await t->handshake(mono_now_ns() + 5 * kSec);
    if (e != HandshakeError::kNone) co_return;
    ++*hs;
    std::array<std::byte, 4> b;
    const IoResult r = co_await t->read_exact(b);
    if (r.ok()) ++*rd;
    std::array<std::byte, 1> idle;
    (void)co_await t->read(idle);  // parked here while idle
  };
  for (auto& p : fds) {
    tcp.push_back(std::make_unique<TcpStream<P>>());
    ASSERT_TRUE(tcp.back()->adopt(this->env.s, p[0]).ok());
    srv.push_back(std::make_unique<TlsStream<P>>());
    ASSERT_TRUE(srv.back()->attach(this->env.s, *tcp.back(), *this->sctx).ok());
    this->env.s.spawn(serve(srv.back().get(), &handshakes, &reads));
  }
  ASSERT_TRUE(this->env.run_until([&] { return reads == kConns; }, 30 * kSec)) << handshakes;
  this->env.settle();
  const int64_t per_conn = (ssl_heap_bytes(0) - before) / kConns;
  int held = 0;
  for (auto& t : srv) held += t->cipher_buffers();
  std::printf(
      "idle TLS connection (server side): %lld bytes of OpenSSL heap, %d ciphertext "
      "buffers held by %d connections\n",
      static_cast<long long>(per_conn), held, kConns);
  // Idle, a connection holds OpenSSL's session and no ciphertext buffer (they go back to
  // the thread's pool once empty; a BIO pair held two of buffer_bytes for good).
  EXPECT_EQ(held, 0);
  EXPECT_EQ(tls::detail::cipher_bytes_held(), 0);
  EXPECT_LE(per_conn, 16 * 1024);
  stop = true;
  client.join();
  int closed = 0;
  auto cl = [](TcpStream<P>* t, int* c) -> Task<void> {
    (void)co_await t->close();
    ++*c;
  };
  for (auto& t : tcp) this->env.s.spawn(cl(t.get(), &closed));
  ASSERT_TRUE(this->env.run_until([&] { return closed == kConns; }));
  this->env.settle();
}

// The kernel here has no TLS upper-layer protocol: the probe says so, with the errno, and
// the record path falls back to user space (every test above ran on it).
TEST(Ktls, ProbeSaysWhyAndPathIsUserspace) {
  const tls::KtlsProbe p = tls::probe_ktls();
  const std::string line = tls::record_path_line();
  if (p.available) {
    EXPECT_EQ(line, "userspace (kernel offers kTLS; hand-over not built)");
  } else {
    EXPECT_NE(p.why.find("TCP_ULP tls: "), std::string::npos) << p.why;
    EXPECT_EQ(line, "userspace (kTLS unavailable: " + p.why + ")");
  }
  EXPECT_EQ(&tls::process_ktls(), &tls::process_ktls());  // probed once
}
// The probe agrees with the kernel's own list of upper-layer protocols, read after it (a
// probe that loads the tls module puts it on the list): this machine's kernel lists only
// "mptcp", so the probe must say unavailable, with ENOENT.
TEST(Ktls, ProbeAgreesWithTheKernelsUlpList) {
  const tls::KtlsProbe p = tls::probe_ktls();
  std::FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");
  ASSERT_NE(f, nullptr) << "no /proc/sys/net/ipv4/tcp_available_ulp";
  char buf[256] = {};
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string ulps(buf, n);
  bool listed = false;
  for (size_t at = 0; (at = ulps.find("tls", at)) != std::string::npos; at += 3) {
    const bool starts = at == 0 || ulps[at - 1] == ' ';
    const bool ends = at + 3 == ulps.size() || ulps[at + 3] == ' ' || ulps[at + 3] == '\n';
    listed = listed || (starts && ends);
  }
  std::printf("kTLS probe: %s (%s); kernel ULPs: %s", p.available ? "available" : "unavailable",
              p.why.c_str(), ulps.c_str());
  EXPECT_EQ(p.available, listed) << p.why;
  if (!listed) {
    EXPECT_EQ(p.why, "TCP_ULP tls: No such file or directory");
  }
}

}  // namespace
}  // namespace ringpoll::test
