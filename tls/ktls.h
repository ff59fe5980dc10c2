#pragma once
// Kernel TLS: where the kernel has the "tls" upper-layer protocol (TCP_ULP "tls", the tls
// module), the record layer can be handed to it after the handshake, so the data path is
// plain send/recv on the socket. Whether it exists is probed once per process, on a
// loopback connection of its own, and every TLS listener says which path it runs.
//
// This build runs the record layer in user space (OpenSSL over memory BIOs) on every
// kernel: the hand-over of the keys (setsockopt SOL_TLS) is not built yet, so a kernel
// that offers kTLS is reported as such and still runs user space (docs/tls.md).
#include <string>

namespace ringpoll::tls {

struct KtlsProbe {
  bool available = false;  // setsockopt(TCP_ULP, "tls") succeeded on a connected socket
  std::string why;         // what the probe saw ("TCP_ULP tls: No such file or directory")
};

// Probes now, on a fresh loopback TCP connection (no caching): for tests.
KtlsProbe probe_ktls();
// The process's probe: run on the first call, the same answer afterwards. Any thread.
const KtlsProbe& process_ktls();
// The record-layer path, for a start-up line: "userspace (kTLS unavailable: ...)" or
// "userspace (kernel offers kTLS; hand-over not built)".
std::string record_path_line();

}  // namespace ringpoll::tls
