#include "tls_context.h"

#include <arpa/inet.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "../engine/clock.h"
#include "../engine/host_name.h"

namespace ringpoll::tls {

const char* to_string(HandshakeError e) {
  switch (e) {
    case HandshakeError::kNone:
      return "none";
    case HandshakeError::kProtocolVersion:
      return "protocol version";
    case HandshakeError::kNoSharedCipher:
      return "no shared cipher";
    case HandshakeError::kBadCertificate:
      return "bad certificate";
    case HandshakeError::kTimeout:
      return "timeout";
    case HandshakeError::kNotTls:
      return "not TLS";
    case HandshakeError::kPeerClosed:
      return "peer closed";
    case HandshakeError::kOther:
      return "other";
  }
  return "?";
}

namespace {

// The top of OpenSSL's error queue as text ("" when empty); clears the queue.
std::string ssl_error_text() {
  const unsigned long e = ERR_peek_last_error();
  std::string s;
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    s = r ? r : "error " + std::to_string(e);
  }
  ERR_clear_error();
  return s;
}

// Fails with "<what> <file>: <reason>", the reason being errno's when the file cannot be
// opened (missing, unreadable) and OpenSSL's otherwise.
bool file_error(const char* what, const std::string& file, std::string* why) {
  if (::access(file.c_str(), R_OK) != 0) {
    const int e = errno;
    ERR_clear_error();
    *why = std::string(what) + " " + file + ": " + std::strerror(e);
  } else {
    const std::string r = ssl_error_text();
    *why = std::string(what) + " " + file + ": " + (r.empty() ? "not usable" : r);
  }
  return false;
}

bool load_cert_key(SSL_CTX* c, const CertKey& ck, std::string* why, TlsField* field) {
  *field = TlsField::kCert;
  if (SSL_CTX_use_certificate_chain_file(c, ck.cert_file.c_str()) != 1)
    return file_error("certificate", ck.cert_file, why);
  *field = TlsField::kKey;
  if (SSL_CTX_use_PrivateKey_file(c, ck.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL checks the key against the certificate loaded last of its type: a mismatch
    // fails here with "key values mismatch".
    if (::access(ck.key_file.c_str(), R_OK) == 0 &&
        ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      *why = "key " + ck.key_file + " does not match certificate " + ck.cert_file;
      return false;
    }
    return file_error("key", ck.key_file, why);
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    ERR_clear_error();
    *why = "key " + ck.key_file + " does not match certificate " + ck.cert_file;
    return false;
  }
  return true;
}

constexpr int64_t kSecNs = 1'000'000'000;

// A field pointer that is never null.
TlsField* or_scratch(TlsField* f) {
  static thread_local TlsField scratch;
  return f ? f : &scratch;
}

// A server SSL_CTX that frees itself, for the single-file checks.
struct ScratchCtx {
  SSL_CTX* c = SSL_CTX_new(TLS_server_method());
  ~ScratchCtx() { SSL_CTX_free(c); }
};

}  // namespace

bool TlsContext::check_cert_file(const std::string& file, std::string* why) {
  ScratchCtx s;
  if (s.c && SSL_CTX_use_certificate_chain_file(s.c, file.c_str()) == 1) return true;
  return file_error("certificate", file, why);
}

bool TlsContext::check_key_file(const std::string& file, std::string* why) {
  ScratchCtx s;
  if (s.c && SSL_CTX_use_PrivateKey_file(s.c, file.c_str(), SSL_FILETYPE_PEM) == 1) return true;
  return file_error("key", file, why);
}

bool TlsContext::setup_common(SSL_CTX* c, std::string* why, TlsField* field) {
  SSL_CTX_set_app_data(c, this);
  const int minv = opt_.min_version == TlsVersion::k13 ? TLS1_3_VERSION : TLS1_2_VERSION;
  SSL_CTX_set_min_proto_version(c, minv);
  // Renegotiation: nothing here needs it and it complicates the stream's two directions.
  // Partial writes: TlsStream::write counts progress record by record. Release buffers:
  // an idle connection keeps no record buffers (docs/tls.md, "What an idle connection costs").
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
  *field = TlsField::kCiphers;
  if (!opt_.ciphers.empty() && SSL_CTX_set_cipher_list(c, opt_.ciphers.c_str()) != 1) {
    *why = "ciphers \"" + opt_.ciphers + "\": " + ssl_error_text();
    return false;
  }
  *field = TlsField::kCiphersuites;
  if (!opt_.ciphersuites.empty() && SSL_CTX_set_ciphersuites(c, opt_.ciphersuites.c_str()) != 1) {
    *why = "ciphersuites \"" + opt_.ciphersuites + "\": " + ssl_error_text();
    return false;
  }
  *field = TlsField::kGroups;
  if (!opt_.groups.empty() && SSL_CTX_set1_groups_list(c, opt_.groups.c_str()) != 1) {
    *why = "groups \"" + opt_.groups + "\": " + ssl_error_text();
    return false;
  }
  return true;
}

bool TlsContext::setup_server(SSL_CTX* c, const std::vector<CertKey>& certs, std::string* why,
                              TlsField* field) {
  if (!setup_common(c, why, field)) return false;
  for (const CertKey& ck : certs) {
    if (!load_cert_key(c, ck, why, field)) return false;
  }
  // Stateless tickets only: no server-side session cache to grow with the clients.
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  static const unsigned char kSidCtx[] = "ringpoll";
  SSL_CTX_set_session_id_context(c, kSidCtx, sizeof kSidCtx - 1);
  if (opt_.ticket_rotate_s > 0) {
    SSL_CTX_set_tlsext_ticket_key_evp_cb(c, &TlsContext::ticket_cb);
    SSL_CTX_set_num_tickets(c, 1);  // one is enough for a client that resumes once at a time
    // A ticket outlives its key by at most one period (the key then stops decrypting).
    SSL_CTX_set_timeout(c, static_cast<long>(2 * opt_.ticket_rotate_s));
  } else {
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(c, 0);
  }
  if (!alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(c, &TlsContext::alpn_select_cb, this);
  return true;
}

bool TlsContext::set_alpn(std::string* why, TlsField* field) {
  for (const std::string& p : opt_.alpn) {
    if (p.empty() || p.size() > 255) {
      *field = TlsField::kAlpn;
      *why = "ALPN protocol \"" + p + "\": must be 1..255 bytes";
      return false;
    }
    alpn_wire_.push_back(static_cast<unsigned char>(p.size()));
    alpn_wire_.insert(alpn_wire_.end(), p.begin(), p.end());
  }
  return true;
}

std::unique_ptr<TlsContext> TlsContext::server(const TlsOptions& o, std::string* why,
                                               TlsField* field) {
  field = or_scratch(field);
  std::unique_ptr<TlsContext> t(new TlsContext());
  t->opt_ = o;
  t->server_ = true;
  if (o.certs.empty()) {
    *field = TlsField::kCert;
    *why = "a TLS server needs a certificate and its key";
    return nullptr;
  }
  if (!t->set_alpn(why, field)) return nullptr;
  t->ctx_ = SSL_CTX_new(TLS_server_method());
  if (!t->ctx_ || !t->setup_server(t->ctx_, o.certs, why, field)) return nullptr;
  for (const SniCert& sc : o.sni) {
    SSL_CTX* c = SSL_CTX_new(TLS_server_method());
    if (!c) {
      *why = "out of memory";
      return nullptr;
    }
    t->sni_ctx_.emplace_back(sc.name, c);
    if (!t->setup_server(c, {sc.cert}, why, field)) return nullptr;
  }
  if (!o.sni.empty()) {
    SSL_CTX_set_tlsext_servername_callback(t->ctx_, &TlsContext::servername_cb);
    SSL_CTX_set_tlsext_servername_arg(t->ctx_, t.get());
  }
  if (o.ticket_rotate_s > 0) {
    std::lock_guard<std::mutex> g(t->mu_);
    t->new_ticket_key_locked(mono_now_ns());
  }
  return t;
}

std::unique_ptr<TlsContext> TlsContext::client(const TlsOptions& o, std::string* why,
                                               TlsField* field) {
  field = or_scratch(field);
  std::unique_ptr<TlsContext> t(new TlsContext());
  t->opt_ = o;
  t->ctx_ = SSL_CTX_new(TLS_client_method());
  if (!t->ctx_ || !t->setup_common(t->ctx_, why, field)) return nullptr;
  if (o.verify) {
    *field = TlsField::kCaFile;
    const int ok = o.ca_file.empty()
                       ? SSL_CTX_set_default_verify_paths(t->ctx_)
                       : SSL_CTX_load_verify_locations(t->ctx_, o.ca_file.c_str(), nullptr);
    if (ok != 1) {
      file_error("CA file", o.ca_file.empty() ? std::string("(system default)") : o.ca_file, why);
      return nullptr;
    }
    SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_NONE, nullptr);
  }
  if (!t->set_alpn(why, field)) return nullptr;
  *field = TlsField::kAlpn;
  if (!t->alpn_wire_.empty() &&
      SSL_CTX_set_alpn_protos(t->ctx_, t->alpn_wire_.data(),
                              static_cast<unsigned>(t->alpn_wire_.size())) != 0) {
    *why = "ALPN list refused: " + ssl_error_text();
    return nullptr;
  }
  if (o.resume) {
    // Sessions go to new_session_cb (the latest is kept), not to OpenSSL's own cache.
    SSL_CTX_set_session_cache_mode(t->ctx_,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(t->ctx_, &TlsContext::new_session_cb);
  }
  return t;
}

TlsContext::~TlsContext() {
  for (SSL_SESSION* sess : sessions_) SSL_SESSION_free(sess);
  for (auto& [name, c] : sni_ctx_) SSL_CTX_free(c);
  if (ctx_) SSL_CTX_free(ctx_);
}

SSL* TlsContext::new_ssl(std::string_view server_name) const {
  SSL* s = SSL_new(ctx_);
  if (!s || server_) return s;
  if (!server_name.empty()) {
    const std::string name(server_name);
    // SNI carries names, not addresses (RFC 6066); an address is still verified.
    unsigned char addr[16];
    const bool is_ip =
        inet_pton(AF_INET, name.c_str(), addr) == 1 || inet_pton(AF_INET6, name.c_str(), addr) == 1;
    if (!is_ip) SSL_set_tlsext_host_name(s, name.c_str());
    if (opt_.verify) SSL_set1_host(s, name.c_str());
  }
  if (opt_.resume) {
    if (SSL_SESSION* sess = latest_session()) {
      SSL_set_session(s, sess);
      SSL_SESSION_free(sess);
    }
  }
  return s;
}

// ---- ticket keys ----

void TlsContext::new_ticket_key_locked(int64_t now_ns) {
  if (nkeys_ > 0) keys_[1] = keys_[0];
  TicketKey& k = keys_[0];
  if (RAND_bytes(k.name, sizeof k.name) != 1 || RAND_bytes(k.aes, sizeof k.aes) != 1 ||
      RAND_bytes(k.hmac, sizeof k.hmac) != 1) {
    // No randomness: a key of zeros would let anyone forge tickets; stop issuing instead.
    std::fprintf(stderr, "ringpoll: tls: RAND_bytes failed; session tickets disabled\n");
    nkeys_ = 0;
    return;
  }
  k.born_ns = now_ns;
  nkeys_ = nkeys_ == 0 ? 1 : 2;
}

void TlsContext::rotate_ticket_keys() {
  std::lock_guard<std::mutex> g(mu_);
  new_ticket_key_locked(mono_now_ns());
  ++rotations_;
}

uint64_t TlsContext::ticket_key_rotations() const {
  std::lock_guard<std::mutex> g(mu_);
  return rotations_;
}

// OpenSSL's ticket callback (SSL_CTX_set_tlsext_ticket_key_evp_cb). enc = 1: a new ticket,
// under the current key (rotated first when its period is over). enc = 0: find the key the
// ticket names; 1 = accept, 2 = accept and issue a new ticket (the previous key), 0 = an
// unknown or forgotten key (a full handshake follows), -1 = failure.
int TlsContext::ticket_cb(SSL* s, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                          EVP_MAC_CTX* hctx, int enc) {
  auto* self = static_cast<TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(s)));
  TicketKey k;
  int result = 1;
  {
    std::lock_guard<std::mutex> g(self->mu_);
    if (self->nkeys_ == 0) return enc ? -1 : 0;
    if (enc) {
      const int64_t now = mono_now_ns();
      if (now - self->keys_[0].born_ns >= self->opt_.ticket_rotate_s * kSecNs) {
        self->new_ticket_key_locked(now);
        ++self->rotations_;
        if (self->nkeys_ == 0) return -1;
      }
      k = self->keys_[0];
    } else {
      int i = 0;
      while (i < self->nkeys_ && std::memcmp(self->keys_[i].name, name, 16) != 0) ++i;
      if (i == self->nkeys_) return 0;
      k = self->keys_[i];
      // 2 (a new ticket) for an old key, and always in TLS 1.3, whose clients use a ticket
      // once (RFC 8446 C.4): without a new one the next connection could not resume.
      result = i == 0 && SSL_version(s) < TLS1_3_VERSION ? 1 : 2;
    }
  }
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_END};
  if (enc) {
    std::memcpy(name, k.name, 16);
    if (RAND_bytes(iv, 16) != 1) return -1;
    if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv) != 1) return -1;
  } else {
    if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes, iv) != 1) return -1;
  }
  if (EVP_MAC_CTX_set_params(hctx, params) != 1) return -1;
  return result;
}

SSL_SESSION* TlsContext::latest_session() const {
  std::lock_guard<std::mutex> g(mu_);
  while (!sessions_.empty()) {
    SSL_SESSION* s = sessions_.back();
    if (!SSL_SESSION_is_resumable(s)) {  // used up (TLS 1.3) or expired
      sessions_.pop_back();
      SSL_SESSION_free(s);
      continue;
    }
    if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
      sessions_.pop_back();  // single use: the caller has the only reference
    } else {
      SSL_SESSION_up_ref(s);
    }
    return s;
  }
  return nullptr;
}

int TlsContext::new_session_cb(SSL* s, SSL_SESSION* sess) {
  auto* self = static_cast<TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(s)));
  self->keep_session(sess);
  return 1;  // the reference is ours now
}

void TlsContext::keep_session(SSL_SESSION* sess) const {
  std::lock_guard<std::mutex> g(mu_);
  if (sessions_.size() == kKeptSessions) {
    SSL_SESSION_free(sessions_.front());
    sessions_.erase(sessions_.begin());
  }
  sessions_.push_back(sess);
}

void TlsContext::handshake_done(SSL* s) const {
  // TLS 1.2 resumption with a renewed ticket replaces the session without calling the
  // new-session callback (OpenSSL calls it for full handshakes only): keep it here.
  // TLS 1.3 tickets come after the handshake, through the callback.
  if (server_ || !opt_.resume || SSL_version(s) >= TLS1_3_VERSION || !SSL_session_reused(s)) return;
  SSL_SESSION* sess = SSL_get1_session(s);
  if (sess && SSL_SESSION_is_resumable(sess)) {
    keep_session(sess);
  } else if (sess) {
    SSL_SESSION_free(sess);
  }
}

// ---- ALPN, SNI ----

int TlsContext::alpn_select_cb(SSL*, const unsigned char** out, unsigned char* outlen,
                               const unsigned char* in, unsigned int inlen, void* arg) {
  auto* self = static_cast<TlsContext*>(arg);
  unsigned char* o = nullptr;
  // The server's order of preference: OpenSSL walks its first list and picks the first
  // protocol the client also offers.
  if (SSL_select_next_proto(&o, outlen, self->alpn_wire_.data(),
                            static_cast<unsigned>(self->alpn_wire_.size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no protocol in common: carry on without ALPN
  }
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

int TlsContext::servername_cb(SSL* s, int*, void* arg) {
  auto* self = static_cast<TlsContext*>(arg);
  const char* name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  // The first pattern that matches, in the order given ("*.example" matches any name
  // under example, engine/host_name.h).
  for (auto& [n, c] : self->sni_ctx_) {
    if (host_pattern_matches(n, name)) {
      SSL_set_SSL_CTX(s, c);
      break;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace ringpoll::tls

namespace ringpoll::tls::detail {

HandshakeError classify_failure(const SSL* s, unsigned long err, const char** text) {
  // A client that refused the server's certificate: the verify result says why.
  const long vr = SSL_get_verify_result(s);
  if (!SSL_is_server(s) && vr != X509_V_OK) {
    *text = X509_verify_cert_error_string(vr);
    return HandshakeError::kBadCertificate;
  }
  if (err == 0) {
    *text = "handshake failed";
    return HandshakeError::kOther;
  }
  const char* r = ERR_reason_error_string(err);
  *text = r ? r : "handshake failed";
  if (ERR_GET_LIB(err) != ERR_LIB_SSL) return HandshakeError::kOther;
  switch (ERR_GET_REASON(err)) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
    case SSL_R_WRONG_SSL_VERSION:
      return HandshakeError::kProtocolVersion;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_CIPHERS_AVAILABLE:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:  // what a peer with nothing in common sends
    case SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY:
      return HandshakeError::kNoSharedCipher;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:  // a certificate's signature did not verify
      return HandshakeError::kBadCertificate;
    case SSL_R_WRONG_VERSION_NUMBER:  // a record header that is not TLS's
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_LENGTH_MISMATCH:
    case SSL_R_BAD_PACKET:
      return HandshakeError::kNotTls;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
      return HandshakeError::kPeerClosed;
    default:
      return HandshakeError::kOther;
  }
}

}  // namespace ringpoll::tls::detail
