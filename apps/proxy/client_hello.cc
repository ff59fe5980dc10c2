#include "apps/proxy/client_hello.h"

#include "engine/host_name.h"

#include <bitset>
#include <cstdio>
#include <vector>

namespace ringpoll::proxy {

namespace {

constexpr uint8_t kRecordHandshake = 22;
constexpr uint8_t kHandshakeClientHello = 1;
constexpr size_t kRecordHeader = 5;
constexpr size_t kMaxFragment = 16384;  // 2^14, RFC 8446 §5.1
constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtAlpn = 16;
constexpr uint16_t kExtPreSharedKey = 41;
constexpr uint16_t kExtSupportedVersions = 43;

std::string hex16(unsigned v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%04x", v & 0xffffu);
  return b;
}

// Reads big-endian fields from a slice of the hello body; every read checks what is left,
// and `at` is the offset in the body, for the error messages.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n, size_t at) : p_(p), n_(n), at_(at) {}
  size_t left() const { return n_; }
  size_t at() const { return at_; }
  bool u8(unsigned* v) { return num(1, v); }
  bool u16(unsigned* v) { return num(2, v); }
  bool u24(unsigned* v) { return num(3, v); }
  // The next n bytes as their own cursor.
  bool sub(size_t n, Cursor* out) {
    if (n > n_) return false;
    *out = Cursor(p_, n, at_);
    skip(n);
    return true;
  }
  bool skip(size_t n) {
    if (n > n_) return false;
    p_ += n;
    n_ -= n;
    at_ += n;
    return true;
  }
  const uint8_t* data() const { return p_; }

 private:
  bool num(size_t k, unsigned* v) {
    if (n_ < k) return false;
    unsigned x = 0;
    for (size_t i = 0; i < k; ++i) x = (x << 8) | p_[i];
    *v = x;
    return skip(k);
  }
  const uint8_t* p_;
  size_t n_;
  size_t at_;
};

// A body parse that fails says so with the body offset.
struct BodyError {
  std::string* why;
  HelloStatus fail(const Cursor& c, const std::string& what) const {
    if (why) *why = "ClientHello byte " + std::to_string(c.at()) + ": " + what;
    return HelloStatus::kMalformed;
  }
};

HelloStatus parse_server_name(Cursor d, ClientHello* out, const BodyError& e) {
  unsigned list = 0;
  if (!d.u16(&list) || list != d.left() || list == 0)
    return e.fail(d, "server_name list length does not match its extension");
  unsigned type = 0, len = 0;
  if (!d.u8(&type) || type != 0) return e.fail(d, "server_name type is not host_name (0)");
  Cursor name(nullptr, 0, 0);
  if (!d.u16(&len) || !d.sub(len, &name)) return e.fail(d, "server_name overruns its list");
  if (d.left() != 0) return e.fail(d, "more than one server_name");
  const std::string_view h(reinterpret_cast<const char*>(name.data()), name.left());
  std::string w;
  if (!valid_host_name(h, &w)) return e.fail(name, "server_name: " + w);
  out->server_name.resize(h.size());
  for (size_t i = 0; i < h.size(); ++i) out->server_name[i] = host_detail::lower(h[i]);
  return HelloStatus::kDone;
}

HelloStatus parse_alpn(Cursor d, ClientHello* out, const BodyError& e) {
  unsigned list = 0;
  if (!d.u16(&list) || list != d.left() || list == 0)
    return e.fail(d, "ALPN list length does not match its extension");
  while (d.left() > 0) {
    unsigned len = 0;
    Cursor p(nullptr, 0, 0);
    if (!d.u8(&len) || len == 0 || !d.sub(len, &p))
      return e.fail(d, "ALPN protocol name empty or overrunning its list");
    out->alpn.emplace_back(reinterpret_cast<const char*>(p.data()), p.left());
  }
  return HelloStatus::kDone;
}

HelloStatus parse_versions(Cursor d, ClientHello* out, const BodyError& e) {
  unsigned len = 0;
  if (!d.u8(&len) || len != d.left() || len == 0 || len % 2 != 0)
    return e.fail(d, "supported_versions length does not match its extension");
  while (d.left() > 0) {
    unsigned v = 0;
    (void)d.u16(&v);
    out->versions.push_back(static_cast<uint16_t>(v));
  }
  return HelloStatus::kDone;
}

HelloStatus parse_body(const uint8_t* p, size_t n, ClientHello* out, std::string* why) {
  const BodyError e{why};
  Cursor c(p, n, 0);
  unsigned v = 0, len = 0;
  if (!c.u16(&v)) return e.fail(c, "no legacy_version");
  if (v < 0x0301 || v > 0x0303) return e.fail(c, "legacy_version " + hex16(v) + " is not TLS");
  out->legacy_version = static_cast<uint16_t>(v);
  if (!c.skip(32)) return e.fail(c, "random cut short");
  if (!c.u8(&len) || len > 32 || !c.skip(len)) return e.fail(c, "legacy_session_id over 32 bytes");
  if (!c.u16(&len) || len < 2 || len % 2 != 0 || !c.skip(len))
    return e.fail(c, "cipher_suites length odd, empty or overrunning the hello");
  if (!c.u8(&len) || len < 1 || !c.skip(len))
    return e.fail(c, "compression_methods empty or overrunning the hello");
  if (c.left() == 0) return HelloStatus::kDone;  // no extensions (a TLS 1.2 hello may omit them)
  if (!c.u16(&len) || len != c.left())
    return e.fail(c, "extensions length does not match the rest of the hello");
  std::bitset<65536> seen;
  bool psk_seen = false;
  while (c.left() > 0) {
    const size_t start = c.at();
    unsigned type = 0;
    Cursor d(nullptr, 0, 0);
    if (!c.u16(&type) || !c.u16(&len) || !c.sub(len, &d))
      return e.fail(c, "extension overruns the extensions block");
    if (psk_seen)
      return e.fail(Cursor(nullptr, 0, start), "pre_shared_key is not the last extension");
    if (seen.test(type))
      return e.fail(Cursor(nullptr, 0, start), "extension " + hex16(type) + " repeated");
    seen.set(type);
    HelloStatus s = HelloStatus::kDone;
    if (type == kExtServerName) s = parse_server_name(d, out, e);
    if (type == kExtAlpn) s = parse_alpn(d, out, e);
    if (type == kExtSupportedVersions) s = parse_versions(d, out, e);
    if (type == kExtPreSharedKey) psk_seen = true;
    if (s != HelloStatus::kDone) return s;
  }
  return HelloStatus::kDone;
}

}  // namespace

const char* to_string(HelloStatus s) {
  switch (s) {
    case HelloStatus::kNeedMore:
      return "need more";
    case HelloStatus::kDone:
      return "done";
    case HelloStatus::kNotTls:
      return "not TLS";
    case HelloStatus::kMalformed:
      return "malformed ClientHello";
    case HelloStatus::kTooLarge:
      return "ClientHello too large";
  }
  return "?";
}

HelloStatus read_client_hello(std::span<const std::byte> in_bytes, ClientHello* out,
                              std::string* why) {
  const auto* in = reinterpret_cast<const uint8_t*>(in_bytes.data());
  const size_t n = in_bytes.size();
  auto refuse = [&](HelloStatus s, size_t at, const std::string& what) {
    if (why) *why = "byte " + std::to_string(at) + ": " + what;
    return s;
  };
  // The handshake message: in place when the first record holds it, else gathered here.
  std::vector<uint8_t> gathered;
  const uint8_t* msg = nullptr;
  size_t have = 0;       // handshake bytes seen so far
  size_t msg_len = 0;    // body length, once the 4-byte header is in
  bool in_place = true;  // every handshake byte so far came from the first record
  size_t pos = 0;
  for (int record = 0; pos < n; ++record) {
    const uint8_t* h = in + pos;
    const size_t avail = n - pos;
    if (h[0] != kRecordHandshake) {
      const std::string what = "record type " + std::to_string(h[0]) + ", not handshake (22)";
      return refuse(record == 0 ? HelloStatus::kNotTls : HelloStatus::kMalformed, pos, what);
    }
    if (avail >= 2 && h[1] != 3)
      return refuse(record == 0 ? HelloStatus::kNotTls : HelloStatus::kMalformed, pos + 1,
                    "record version major " + std::to_string(h[1]) + ", not 3");
    if (avail >= 3 && (h[2] < 1 || h[2] > 4))
      return refuse(HelloStatus::kMalformed, pos + 2,
                    "record version " + hex16(0x0300u | h[2]) + " is not TLS 1.0-1.3");
    if (avail < kRecordHeader) return HelloStatus::kNeedMore;
    const size_t frag = (static_cast<size_t>(h[3]) << 8) | h[4];
    if (frag == 0 || frag > kMaxFragment)
      return refuse(
          HelloStatus::kMalformed, pos + 3,
          "record length " + std::to_string(frag) + " (1.." + std::to_string(kMaxFragment) + ")");
    const size_t got = std::min(frag, avail - kRecordHeader);
    const uint8_t* f = h + kRecordHeader;
    if (record == 0) {
      msg = f;
    } else {
      if (in_place) gathered.assign(msg, msg + have);
      in_place = false;
    }
    // Only the hello's own bytes matter; what follows it in its last record is the TLS
    // peer's business.
    const size_t want = msg_len ? 4 + msg_len - have : SIZE_MAX;
    const size_t use = std::min(got, want);
    if (!in_place) gathered.insert(gathered.end(), f, f + use);
    const size_t before = have;
    have += use;
    const uint8_t* m = in_place ? msg : gathered.data();
    if (before < 1 && have >= 1 && m[0] != kHandshakeClientHello)
      return refuse(HelloStatus::kMalformed, pos + kRecordHeader,
                    "handshake type " + std::to_string(m[0]) + ", not client_hello (1)");
    if (msg_len == 0 && have >= 4) {
      msg_len = (static_cast<size_t>(m[1]) << 16) | (static_cast<size_t>(m[2]) << 8) | m[3];
      if (msg_len > kMaxClientHello)
        return refuse(HelloStatus::kTooLarge, pos + kRecordHeader + (4 - before),
                      "ClientHello of " + std::to_string(msg_len) + " bytes (at most " +
                          std::to_string(kMaxClientHello) + ")");
      if (msg_len < 2 + 32 + 1 + 2 + 1)
        return refuse(HelloStatus::kMalformed, pos + kRecordHeader,
                      "ClientHello of " + std::to_string(msg_len) + " bytes is too short");
      // Records left over from the first check can carry more bytes than the body needs.
      if (have > 4 + msg_len) have = 4 + msg_len;
    }
    if (msg_len && have == 4 + msg_len) {
      const HelloStatus s = parse_body(m + 4, msg_len, out, why);
      if (s == HelloStatus::kDone) out->wire_bytes = pos + kRecordHeader + (have - before);
      return s;
    }
    if (got < frag) return HelloStatus::kNeedMore;
    pos += kRecordHeader + frag;
  }
  return HelloStatus::kNeedMore;
}

}  // namespace ringpoll::proxy
