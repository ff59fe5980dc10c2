// libFuzzer target: the ClientHello reader of SNI routing (apps/proxy/client_hello.h).
// The input is read twice. As raw bytes, the reader must never read past them, and a hello
// it accepts must end within them. As a recipe (server name, ALPN names, versions, record
// size), the hello built from it must read back to the same fields whenever the name is
// a valid host name, and its strict prefixes must ask for more bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "apps/proxy/client_hello.h"
#include "engine/host_name.h"
#include "fuzz/fuzz_input.h"
#include "tests/support/tls_hello.h"

namespace {

using ringpoll::proxy::ClientHello;
using ringpoll::proxy::HelloStatus;
using ringpoll::proxy::read_client_hello;

HelloStatus read(const uint8_t* p, size_t n, ClientHello* h) {
  std::string why;
  const HelloStatus s = read_client_hello(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(p), n), h, &why);
  if (s == HelloStatus::kDone && h->wire_bytes > n) std::abort();  // ends past the input
  if ((s == HelloStatus::kMalformed || s == HelloStatus::kNotTls) && why.empty()) std::abort();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ClientHello raw;
  (void)read(data, size, &raw);

  ringpoll::fuzz::FuzzInput r{data, size};
  ringpoll::test::HelloSpec spec;
  spec.sni = r.text(40);
  for (size_t i = 0, k = r.byte() % 4; i < k; ++i) {
    std::string a = r.text(12);
    if (!a.empty()) spec.alpn.push_back(a);
  }
  for (size_t i = 0, k = r.byte() % 4; i < k; ++i)
    spec.versions.push_back(static_cast<uint16_t>(0x0300 | (r.byte() % 5)));
  spec.session_id = r.byte() % 33;
  spec.ciphers = 1 + r.byte() % 40;
  spec.fragment = 1 + r.byte() % 300;
  const std::string wire = ringpoll::test::client_hello(spec);
  const auto* w = reinterpret_cast<const uint8_t*>(wire.data());
  ClientHello h;
  std::string why;
  const bool valid_name = spec.sni.empty() || ringpoll::valid_host_pattern(spec.sni, &why);
  const bool wild = spec.sni.find('*') != std::string::npos;
  const HelloStatus s = read(w, wire.size(), &h);
  if (valid_name && !wild) {
    if (s != HelloStatus::kDone || h.wire_bytes != wire.size()) std::abort();
    if (h.server_name.size() != spec.sni.size()) std::abort();
    if (h.alpn != spec.alpn || h.versions != spec.versions) std::abort();
  }
  // Every cut of a short hello, 64 spread over a long one, and the last byte's.
  auto check_prefix = [&](size_t cut) {
    ClientHello p;
    const HelloStatus ps = read(w, cut, &p);
    if (ps == HelloStatus::kDone) std::abort();  // a strict prefix is never a whole hello
    if (valid_name && !wild && ps != HelloStatus::kNeedMore) std::abort();
  };
  const size_t step = wire.size() / 64 + 1;
  for (size_t cut = 0; cut < wire.size(); cut += step) check_prefix(cut);
  check_prefix(wire.size() - 1);
  return 0;
}
