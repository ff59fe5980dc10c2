#pragma once
// ringpoll-load's generator: a client on the engine. An Engine<P> with --shards shards
// (pinned to the process's allowed CPUs, as the servers' are) runs one coroutine per
// connection; each connects through TcpStream (PollFd::connect, with a deadline), writes
// and reads with deadlines, and records into its shard's counters and histogram, which
// are merged after the shards have joined. The implementation and its explicit
// instantiations for every backend of engine/backend.h are in generator.cc.
#include <functional>

#include "apps/load/options.h"
#include "apps/load/report.h"
#include "engine/backend.h"

namespace ringpoll::load {

// Runs a load on backend P and returns what it measured. `progress` (may be empty) is
// called on this thread about once a second during the load phase.
template <PollerBackend P>
LoadReport run_load_on(const LoadOptions& opt,
                       const std::function<void(const ProgressSample&)>& progress = {});

#ifdef _WIN32
extern template LoadReport run_load_on<IocpPoller>(
    const LoadOptions&, const std::function<void(const ProgressSample&)>&);
#else
extern template LoadReport run_load_on<EpollPoller>(
    const LoadOptions&, const std::function<void(const ProgressSample&)>&);
extern template LoadReport run_load_on<UringPoller>(
    const LoadOptions&, const std::function<void(const ProgressSample&)>&);
extern template LoadReport run_load_on<UringCompletionPoller>(
    const LoadOptions&, const std::function<void(const ProgressSample&)>&);
#endif

// Picks the backend as the other programs do (process_backend: io_uring in completion
// mode, else epoll; --backend or RINGPOLL_BACKEND pins one) and runs; report.failure is
// set when it cannot.
LoadReport run_load(const LoadOptions& opt,
                    const std::function<void(const ProgressSample&)>& progress = {});

}  // namespace ringpoll::load
