#pragma once
// Builds TLS ClientHello messages byte by byte (RFC 8446 §4.1.2), for the tests and the
// fuzzer of the SNI reader (apps/proxy/client_hello.h): what a client would send, with the
// fields a test wants to vary, cut into records of a chosen size.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ringpoll::test {

struct HelloSpec {
  std::string sni;                 // empty: no server_name extension
  std::vector<std::string> alpn;   // empty: no ALPN extension
  std::vector<uint16_t> versions;  // empty: no supported_versions extension
  uint16_t legacy_version = 0x0303;
  size_t session_id = 32;
  size_t ciphers = 4;
  size_t fragment = 16384;  // record fragment size the message is cut into
  // Extra extensions, raw: (type, data), after the ones above.
  std::vector<std::pair<uint16_t, std::string>> extra;
  bool extensions = true;  // false: a hello with no extensions block at all
};

inline void put16(std::string& s, size_t v) {
  s.push_back(static_cast<char>((v >> 8) & 0xff));
  s.push_back(static_cast<char>(v & 0xff));
}

inline void put_ext(std::string& s, uint16_t type, const std::string& data) {
  put16(s, type);
  put16(s, data.size());
  s += data;
}

// The handshake message (header included), not yet in records.
inline std::string hello_message(const HelloSpec& h) {
  std::string b;
  put16(b, h.legacy_version);
  for (int i = 0; i < 32; ++i) b.push_back(static_cast<char>(i * 7));
  b.push_back(static_cast<char>(h.session_id));
  b.append(h.session_id, '\x5a');
  put16(b, 2 * h.ciphers);
  for (size_t i = 0; i < h.ciphers; ++i) put16(b, 0x1301 + i);
  b.push_back(1);
  b.push_back(0);
  if (h.extensions) {
    std::string ext;
    if (!h.sni.empty()) {
      std::string d, entry;
      entry.push_back(0);
      put16(entry, h.sni.size());
      entry += h.sni;
      put16(d, entry.size());
      d += entry;
      put_ext(ext, 0, d);
    }
    if (!h.alpn.empty()) {
      std::string list, d;
      for (const std::string& p : h.alpn) {
        list.push_back(static_cast<char>(p.size()));
        list += p;
      }
      put16(d, list.size());
      d += list;
      put_ext(ext, 16, d);
    }
    if (!h.versions.empty()) {
      std::string d;
      d.push_back(static_cast<char>(2 * h.versions.size()));
      for (uint16_t v : h.versions) put16(d, v);
      put_ext(ext, 43, d);
    }
    for (const auto& [type, data] : h.extra) put_ext(ext, type, data);
    put16(b, ext.size());
    b += ext;
  }
  std::string m;
  m.push_back(1);  // client_hello
  m.push_back(static_cast<char>((b.size() >> 16) & 0xff));
  put16(m, b.size() & 0xffff);
  return m + b;
}

// A handshake message cut into records of at most `fragment` bytes.
inline std::string in_records(const std::string& msg, size_t fragment) {
  std::string w;
  for (size_t at = 0; at < msg.size(); at += fragment) {
    const size_t n = std::min(fragment, msg.size() - at);
    w.push_back(22);
    w.push_back(3);
    w.push_back(1);
    put16(w, n);
    w.append(msg, at, n);
  }
  return w;
}

inline std::string client_hello(const HelloSpec& h) {
  return in_records(hello_message(h), h.fragment);
}

}  // namespace ringpoll::test
