#pragma once
// Backend selection: once per process, the engine picks io_uring when a real ring can be
// set up, else epoll, unless the configuration pins one. A failed io_uring setup is
// classified (ENOSYS / EPERM with kernel.io_uring_disabled / ENOMEM with RLIMIT_MEMLOCK)
// and one log line says which backend runs and why. The whole process falls back, never
// half-way: every shard uses the one selection. A pinned backend that cannot start is an
// error naming the cause.
//
// Windows (mingw-w64 build): the one backend is IOCP (IocpPoller); `auto` selects it after
// its probe, and a configuration pinning io_uring or epoll is refused, saying they are
// Linux backends.
#include <string>
#include <string_view>
#include <type_traits>

#include "../poller/errors.h"
#ifdef _WIN32
#include "../iocp/iocp_poller.h"
#else
#include "../epoll/epoll_poller.h"
#include "../uring/uring_completion.h"
#include "../uring/uring_poller.h"
#endif

namespace ringpoll {

enum class BackendChoice { kAuto, kIoUring, kEpoll };

// io_uring's two ways of running (docs/backends-and-profiles.md): completion (the
// default, what ringpoll's programs and benchmarks run: multishot accept and recv into
// provided buffers, UringCompletionPoller) or readiness (multishot poll, then the plain
// syscall, UringPoller).
enum class IoUringMode { kCompletion, kReadiness };
const char* to_string(IoUringMode m);

// "auto", "io_uring", "epoll" (also "uring"); false for anything else.
bool parse_backend_choice(std::string_view s, BackendChoice* out);
const char* to_string(BackendChoice c);

// The environment variable that overrides a program's backend choice, for a run:
// RINGPOLL_BACKEND=epoll (or auto, io_uring, io_uring-completion, io_uring-readiness).
inline constexpr const char* kBackendEnv = "RINGPOLL_BACKEND";

struct BackendSelection {
  BackendChoice chosen = BackendChoice::kEpoll;       // kIoUring or kEpoll when ok
  IoUringMode uring_mode = IoUringMode::kCompletion;  // how io_uring runs when chosen
  std::string why;                                    // one line: why this backend runs
  Status error;                                       // set when a pinned backend cannot start
  bool ok() const { return error.ok(); }
  // "ringpoll: backend io_uring (completion mode): first choice; probe ok",
  // "ringpoll: backend epoll: io_uring unavailable: ..."
  std::string log_line() const;
};

// Probes now (no caching): for tests, and for the first call of process_backend.
BackendSelection select_backend(BackendChoice pinned, IoUringMode mode = IoUringMode::kCompletion);

// The process-wide selection: computed and logged (to stderr) on the first call; later
// calls return the same selection whatever they ask (so the process never runs half on
// one backend). `pinned` and `mode` of the first call win, unless the environment sets
// RINGPOLL_BACKEND, which overrides them (the log line says so; a value it does not know
// is an error selection naming the variable).
const BackendSelection& process_backend(BackendChoice pinned = BackendChoice::kAuto,
                                        IoUringMode mode = IoUringMode::kCompletion);

namespace detail {
// with_backend given a selection that is not ok(): prints its log line and exits(1).
[[noreturn]] void unusable_backend_selection(const BackendSelection& sel);
}  // namespace detail

// The backends the sockets layer and the programs run on here: the one candidate list.
// with_backend dispatches over it; the test suites instantiate their socket-level tests
// over it (tests/support/test_env.h); ringpoll-echo picks from it by name. Order: what
// `auto` prefers first. (The conformance suite adds the emulated and single-shot
// variants, which no program selects.)
template <class... Ps>
struct BackendList {};
#ifdef _WIN32
using SocketBackends = BackendList<IocpPoller>;
#else
using SocketBackends = BackendList<UringCompletionPoller, UringPoller, EpollPoller>;
// Those that wait for readiness (code that parks on PollDescs itself).
using ReadinessSocketBackends = BackendList<UringPoller, EpollPoller>;
#endif

// The kName of the backend a selection runs (a name in SocketBackends).
const char* backend_name(const BackendSelection& sel);

namespace detail {
template <class Fn, class P, class... Rest>
decltype(auto) call_named(std::string_view name, Fn& fn) {
  if constexpr (sizeof...(Rest) == 0) {
    return fn.template operator()<P>();  // the last candidate: the caller checked the name
  } else {
    if (name == P::kName) return fn.template operator()<P>();
    return call_named<Fn, Rest...>(name, fn);
  }
}
template <class... Ps>
bool names_one_of(std::string_view name, BackendList<Ps...>) {
  return ((name == Ps::kName) || ...);
}
template <class Fn, class... Ps>
decltype(auto) call_named_in(std::string_view name, BackendList<Ps...>, Fn& fn) {
  return call_named<Fn, Ps...>(name, fn);
}
}  // namespace detail

// Calls fn.template operator()<P>() with the backend of `list` named `name` (a kName, e.g.
// "io_uring-completion"); false, without calling fn, when no backend there has that name.
// fn must return void.
template <class List = SocketBackends, class Fn>
bool with_backend_named(std::string_view name, Fn&& fn, List list = {}) {
  if (!detail::names_one_of(name, list)) return false;
  detail::call_named_in(name, list, fn);
  return true;
}

// Calls fn.template operator()<Poller>() with the selected backend's type:
// UringCompletionPoller (io_uring, completion mode: the default), UringPoller (io_uring,
// readiness mode) or EpollPoller. A selection that is not ok() (a pinned backend that
// cannot start, a bad RINGPOLL_BACKEND) ends the process with its message; check ok()
// first to handle it yourself.
template <class Fn>
decltype(auto) with_backend(const BackendSelection& sel, Fn&& fn) {
  if (!sel.ok()) detail::unusable_backend_selection(sel);
  return detail::call_named_in(backend_name(sel), SocketBackends{}, fn);
}

#ifndef _WIN32  // IOCP is the only Windows backend, and a completion one
// with_backend for code that runs on readiness backends only (it waits on PollDescs
// itself; with_backend would instantiate it for UringCompletionPoller too): io_uring runs
// in readiness mode, whatever sel.uring_mode says (ask process_backend for kReadiness so
// that its log line says so).
template <class Fn>
decltype(auto) with_readiness_backend(const BackendSelection& sel, Fn&& fn) {
  if (!sel.ok()) detail::unusable_backend_selection(sel);
  BackendSelection readiness = sel;
  readiness.uring_mode = IoUringMode::kReadiness;
  return detail::call_named_in(backend_name(readiness), ReadinessSocketBackends{}, fn);
}
#endif

}  // namespace ringpoll
