#pragma once
// The TLS ClientHello reader behind SNI routing (apps/proxy/sni.h): ringpoll-proxy reads
// the first bytes a client sends, finds the server name and ALPN offer in them, picks a
// pool, and passes every byte through to the upstream untouched — it never terminates the
// TLS session (nginx calls this ssl_preread).
//
// The reader takes the bytes received so far, from the first one, and either needs more,
// or has a whole ClientHello, or refuses. It follows the wire format of RFC 8446 §4.1.2
// (which TLS 1.2 clients also send) strictly, since a lenient reader is how a proxy and
// its upstreams come to disagree on what a hello said:
//   - TLSPlaintext records of type handshake (22), each at most 2^14 bytes of fragment; the
//     handshake message may span several records, and nothing else may be interleaved;
//   - one handshake message, of type client_hello (1), at most kMaxClientHello bytes;
//   - every length field inside stays within its parent, extensions may not repeat,
//     and nothing follows the last extension;
//   - server_name (RFC 6066 §3): one host_name, 1..255 bytes of letters, digits, '-', '_'
//     and '.', no empty label, no trailing dot; reported in lower case;
//   - application_layer_protocol_negotiation (RFC 7301): non-empty protocol names.
// Anything else (an SSLv2-style hello, plain HTTP, a record of another type) is not TLS.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringpoll::proxy {

// The largest ClientHello body accepted (post-quantum key shares make 1.5–2 KiB common).
inline constexpr size_t kMaxClientHello = 16384;
// The most bytes a reader should buffer before giving up: room for the largest hello in
// records of 64 bytes or more. A hello cut into smaller records than that (no TLS stack
// does so) is refused as too large once this much has arrived undecided.
inline constexpr size_t kMaxClientHelloWire = 2 * kMaxClientHello;

struct ClientHello {
  uint16_t legacy_version = 0;     // 0x0303 from TLS 1.2 and 1.3 clients
  std::string server_name;         // the SNI host name, lower case; empty when not sent
  std::vector<std::string> alpn;   // the offered protocols, in the client's order
  std::vector<uint16_t> versions;  // supported_versions, when sent (TLS 1.3 clients)
  size_t wire_bytes = 0;  // input bytes up to the hello's last byte (record headers included)
};

enum class HelloStatus : uint8_t {
  kNeedMore,   // a valid prefix of a hello: read more
  kDone,       // a whole hello: *out filled
  kNotTls,     // the bytes are not a TLS handshake at all
  kMalformed,  // a TLS handshake whose ClientHello breaks the format (why says where)
  kTooLarge,   // a ClientHello over kMaxClientHello
};
const char* to_string(HelloStatus s);

// Reads a ClientHello from the first bytes of a connection. On kMalformed, kNotTls and
// kTooLarge, *why says what was wrong and at which byte offset of the input.
HelloStatus read_client_hello(std::span<const std::byte> in, ClientHello* out, std::string* why);

}  // namespace ringpoll::proxy
