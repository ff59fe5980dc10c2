#pragma once
// TlsContext: the configuration a TlsStream runs with — OpenSSL 3's SSL_CTX, set up once per
// listener (server) or per destination (client) and shared by every shard.
//
// Server: certificate chains with their keys (an ECDSA and an RSA chain may be given
// together: OpenSSL picks by the client's signature algorithms), certificates per SNI name
// (a client naming none of them gets the default ones), the lowest version (TLS 1.2 or
// 1.3), cipher lists and groups, ALPN in the server's order of preference, and session
// tickets whose keys rotate: a key encrypts new tickets for `ticket_rotate_s`, then still
// decrypts (and has renewed) tickets for one more period, then is forgotten.
//
// Client: a CA file and peer verification (chain and host name), the SNI name per stream,
// ALPN offers, and with `resume` the latest session ticket kept and offered on the next
// connection.
//
// Errors name the file and what is wrong with it ("key /x/k.pem does not match certificate
// /x/c.pem"); the config layer adds its file, line and key.
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace ringpoll::tls {

// Why a handshake failed, in classes a proxy can count (TlsStream::handshake).
enum class HandshakeError : uint8_t {
  kNone,
  kProtocolVersion,  // no version both sides accept
  kNoSharedCipher,   // no cipher suite, group or signature algorithm in common
  kBadCertificate,   // the peer's certificate was refused (chain, host name, expiry), or
                     // the peer refused ours
  kTimeout,          // the handshake deadline passed
  kNotTls,           // the peer's bytes are not TLS records (e.g. plain HTTP)
  kPeerClosed,       // the peer closed or reset the connection mid-handshake
  kOther,
};
const char* to_string(HandshakeError e);

struct CertKey {
  std::string cert_file;  // PEM: the leaf first, then its intermediates
  std::string key_file;   // PEM private key of the leaf
};

struct SniCert {
  // The server names it is for: an exact name ("a.example"), "*.example" (any name
  // under example) or "*" (engine/host_name.h); the first matching entry wins.
  std::string name;
  CertKey cert;
};

enum class TlsVersion : uint8_t { k12, k13 };

// Which option a TlsContext refused: the config layer names its key.
enum class TlsField : uint8_t {
  kNone,
  kCert,
  kKey,
  kCaFile,
  kCiphers,
  kCiphersuites,
  kGroups,
  kAlpn
};

struct TlsOptions {
  // ---- server ----
  std::vector<CertKey> certs;      // the default certificates (at least one)
  std::vector<SniCert> sni;        // per-name certificates
  int64_t ticket_rotate_s = 3600;  // a ticket key's encrypting life; 0: no tickets
  // ---- both ----
  TlsVersion min_version = TlsVersion::k12;
  std::string ciphers;            // TLS 1.2 cipher list; empty: OpenSSL's default
  std::string ciphersuites;       // TLS 1.3 suites; empty: OpenSSL's default
  std::string groups;             // key-exchange groups ("X25519:P-256"); empty: default
  std::vector<std::string> alpn;  // protocols in order of preference ("h2", "http/1.1")
  // ---- client ----
  std::string ca_file;  // the CAs a server certificate must chain to; empty: system store
  bool verify = true;   // check the server's chain and host name (false: --tls-insecure)
  bool resume = false;  // keep the latest session and offer it on the next handshake
  // Ciphertext buffered per stream each way (a BIO pair, allocated with the stream):
  // one full TLS record with its header and tag fits.
  size_t buffer_bytes = 17 * 1024;
};

class TlsContext {
 public:
  // nullptr with *why set when a file cannot be read, a key does not match its
  // certificate, or a list is refused by OpenSSL.
  // *field (when given) says which option was refused.
  static std::unique_ptr<TlsContext> server(const TlsOptions& o, std::string* why,
                                            TlsField* field = nullptr);
  static std::unique_ptr<TlsContext> client(const TlsOptions& o, std::string* why,
                                            TlsField* field = nullptr);
  // What a config can check before both halves of a pair are known: the certificate
  // file alone, or the key file alone (a PEM OpenSSL can load). False with *why.
  static bool check_cert_file(const std::string& file, std::string* why);
  static bool check_key_file(const std::string& file, std::string* why);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  bool is_server() const noexcept { return server_; }
  const TlsOptions& options() const noexcept { return opt_; }
  // A new session object for one connection (client: with the SNI and verify name set
  // and, with `resume`, the kept session offered); nullptr when OpenSSL is out of memory.
  SSL* new_ssl(std::string_view server_name) const;

  // Ticket keys: rotates now (a timer does it every ticket_rotate_s on its own; tests
  // call this). The previous key still decrypts; the one before is forgotten.
  void rotate_ticket_keys();
  uint64_t ticket_key_rotations() const;

  // Client with `resume`: a session to offer (a reference the caller frees with
  // SSL_SESSION_free), or nullptr. The newest kept one; a TLS 1.3 ticket is handed out
  // once (its clients use a ticket once, RFC 8446 C.4; every handshake brings a new one),
  // a TLS 1.2 session stays for the next connection too.
  SSL_SESSION* latest_session() const;
  // Tickets kept for connections that open at the same time (each takes its own).
  static constexpr size_t kKeptSessions = 64;
  // TlsStream, after a successful handshake: lets a resuming client keep the session.
  void handshake_done(SSL* s) const;

 private:
  struct TicketKey {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    int64_t born_ns = 0;
  };
  TlsContext() = default;
  bool setup_common(SSL_CTX* c, std::string* why, TlsField* field);
  bool setup_server(SSL_CTX* c, const std::vector<CertKey>& certs, std::string* why,
                    TlsField* field);
  bool set_alpn(std::string* why, TlsField* field);
  void new_ticket_key_locked(int64_t now_ns);
  static int ticket_cb(SSL* s, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                       EVP_MAC_CTX* hctx, int enc);
  static int alpn_select_cb(SSL* s, const unsigned char** out, unsigned char* outlen,
                            const unsigned char* in, unsigned int inlen, void* arg);
  static int servername_cb(SSL* s, int* alert, void* arg);
  static int new_session_cb(SSL* s, SSL_SESSION* sess);
  void keep_session(SSL_SESSION* sess) const;  // takes the reference

  TlsOptions opt_;
  bool server_ = false;
  SSL_CTX* ctx_ = nullptr;                                 // the default (and the client's)
  std::vector<std::pair<std::string, SSL_CTX*>> sni_ctx_;  // per-name server contexts
  std::vector<unsigned char> alpn_wire_;                   // length-prefixed, as ALPN sends it

  mutable std::mutex mu_;  // ticket keys and the kept session: shared by the shards
  TicketKey keys_[2]{};    // [0] encrypts; [1] the previous one, decrypt only
  int nkeys_ = 0;
  uint64_t rotations_ = 0;
  mutable std::vector<SSL_SESSION*> sessions_;  // oldest first, at most kKeptSessions
};

}  // namespace ringpoll::tls
