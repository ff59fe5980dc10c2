// libFuzzer target: the PROXY protocol writer and reader (apps/proxy/proxy_protocol.h).
// The input chooses two addresses (family, bytes, ports) and a capacity: whatever the
// writer produces must parse back to the same addresses, every shorter prefix must ask for
// more bytes, and a capacity too small must write nothing. The rest of the input is fed to
// the reader as an arbitrary header, which must never read past it.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "apps/proxy/proxy_protocol.h"
#include "fuzz/fuzz_input.h"

namespace {

using Input = ringpoll::fuzz::FuzzInput;

sockaddr_storage make_addr(Input& in) {
  sockaddr_storage ss{};
  const uint8_t kind = in.byte() % 3;
  if (kind == 0) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    for (size_t i = 0; i < 4; ++i) reinterpret_cast<uint8_t*>(&a.sin_addr)[i] = in.byte();
    a.sin_port = static_cast<uint16_t>(in.byte() << 8 | in.byte());
    std::memcpy(&ss, &a, sizeof a);
  } else if (kind == 1) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    for (size_t i = 0; i < 16; ++i) a.sin6_addr.s6_addr[i] = in.byte();
    a.sin6_port = static_cast<uint16_t>(in.byte() << 8 | in.byte());
    std::memcpy(&ss, &a, sizeof a);
  } else {
    ss.ss_family = AF_UNIX;
  }
  return ss;
}

bool same(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    sockaddr_in x, y;
    std::memcpy(&x, &a, sizeof x);
    std::memcpy(&y, &b, sizeof y);
    return x.sin_port == y.sin_port && std::memcmp(&x.sin_addr, &y.sin_addr, 4) == 0;
  }
  if (a.ss_family == AF_INET6) {
    sockaddr_in6 x, y;
    std::memcpy(&x, &a, sizeof x);
    std::memcpy(&y, &b, sizeof y);
    return x.sin6_port == y.sin6_port && std::memcmp(&x.sin6_addr, &y.sin6_addr, 16) == 0;
  }
  return true;
}

// The address as the writer puts it on the wire: IPv4 stays IPv4 only when both are.
sockaddr_storage as_written(const sockaddr_storage& s, const sockaddr_storage& other) {
  const bool known = (s.ss_family == AF_INET || s.ss_family == AF_INET6) &&
                     (other.ss_family == AF_INET || other.ss_family == AF_INET6);
  if (!known) return sockaddr_storage{};
  if (s.ss_family == AF_INET && other.ss_family == AF_INET6) {
    sockaddr_in a;
    std::memcpy(&a, &s, sizeof a);
    sockaddr_in6 m{};
    m.sin6_family = AF_INET6;
    m.sin6_port = a.sin_port;
    m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
    std::memcpy(&m.sin6_addr.s6_addr[12], &a.sin_addr, 4);
    sockaddr_storage out{};
    std::memcpy(&out, &m, sizeof m);
    return out;
  }
  return s;
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ringpoll::proxy;
  Input in{data, size};
  const sockaddr_storage src = make_addr(in);
  const sockaddr_storage dst = make_addr(in);
  const size_t cap = in.byte() % (kProxyHeaderMaxBytes + 8);
  const int version = in.byte() % 2 + 1;

  std::vector<uint8_t> out(cap == 0 ? 1 : cap);
  const size_t n = version == 1 ? write_proxy_v1(src, dst, reinterpret_cast<char*>(out.data()), cap)
                                : write_proxy_v2(src, dst, out.data(), cap);
  check(n <= cap);
  if (n > 0) {
    sockaddr_storage s, d;
    for (size_t k = 0; k < n; ++k) check(parse_proxy_header(out.data(), k, &s, &d) == 0);
    check(parse_proxy_header(out.data(), n, &s, &d) == static_cast<long>(n));
    check(same(s, as_written(src, dst)));
    check(same(d, as_written(dst, src)));
  }

  // The rest as an arbitrary header, copied so reading past it is caught by ASan.
  std::vector<uint8_t> rest(in.p, in.p + in.n);
  sockaddr_storage s, d;
  const long r = parse_proxy_header(rest.data(), rest.size(), &s, &d);
  check(r >= -1 && r <= static_cast<long>(rest.size()));
  return 0;
}
