#pragma once
// Backend selection: once per process, the engine picks io_uring when a real ring can be
// set up, else epoll, unless the configuration pins one. A failed io_uring setup is
// classified (ENOSYS / EPERM with kernel.io_uring_disabled / ENOMEM with RLIMIT_MEMLOCK)
// and one log line says which backend runs and why. The whole process falls back, never
// half-way: every shard uses the one selection. A pinned backend that cannot start is an
// error naming the cause.
#include <string>
#include <string_view>
#include <type_traits>

#include "../epoll/epoll_poller.h"
#include "../poller/errors.h"
#include "../uring/uring_poller.h"

namespace ringpoll {

enum class BackendChoice { kAuto, kIoUring, kEpoll };

// "auto", "io_uring", "epoll" (also "uring"); false for anything else.
bool parse_backend_choice(std::string_view s, BackendChoice* out);
const char* to_string(BackendChoice c);

struct BackendSelection {
  BackendChoice chosen = BackendChoice::kEpoll;  // kIoUring or kEpoll when ok
  std::string why;                               // one line: why this backend runs
  Status error;                                  // set when a pinned backend cannot start
  bool ok() const { return error.ok(); }
  std::string log_line() const;  // "ringpoll: backend epoll: io_uring unavailable: ..."
};

// Probes now (no caching): for tests, and for the first call of process_backend.
BackendSelection select_backend(BackendChoice pinned);

// The process-wide selection: computed and logged (to stderr) on the first call; later
// calls return the same selection whatever they ask (so the process never runs half on
// one backend). `pinned` of the first call wins.
const BackendSelection& process_backend(BackendChoice pinned = BackendChoice::kAuto);

// Calls fn.template operator()<Poller>() with the selected backend's type.
template <class Fn>
decltype(auto) with_backend(const BackendSelection& sel, Fn&& fn) {
  if (sel.chosen == BackendChoice::kIoUring) return fn.template operator()<UringPoller>();
  return fn.template operator()<EpollPoller>();
}

}  // namespace ringpoll
