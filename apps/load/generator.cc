#include "apps/load/generator.h"

#include <sys/resource.h>

#include "engine/backend.h"

namespace ringpoll::load {
namespace {

// Descriptors beyond the connections: the scheduler's poller, stdio, the JSON file.
constexpr rlim_t kSpareFds = 64;

// Raises the soft descriptor limit far enough for the connections, if the hard limit
// allows; false when it does not.
bool ensure_fd_limit(int connections, std::string* why) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return true;  // cannot tell: let connects fail
  const rlim_t want = static_cast<rlim_t>(connections) + kSpareFds;
  if (rl.rlim_cur >= want) return true;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
    *why = "--connections: " + std::to_string(connections) +
           " needs more descriptors than the hard limit (" + std::to_string(rl.rlim_max) + ")";
    return false;
  }
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    *why = "cannot raise RLIMIT_NOFILE to " + std::to_string(want);
    return false;
  }
  return true;
}

}  // namespace

LoadReport run_load(const LoadOptions& opt,
                    const std::function<void(const ProgressSample&)>& progress) {
  std::string why;
  if (!ensure_fd_limit(opt.connections, &why)) {
    LoadReport rep;
    rep.options = opt;
    rep.failure = why;
    return rep;
  }
  // Readiness mode: the generator shares one receive buffer per shard (generator.h).
  const BackendSelection& sel = process_backend(opt.backend, IoUringMode::kReadiness);
  if (!sel.ok()) {
    LoadReport rep;
    rep.options = opt;
    rep.failure = sel.log_line();
    return rep;
  }
  return with_readiness_backend(sel, [&]<class P>() { return run_load_on<P>(opt, progress); });
}

}  // namespace ringpoll::load
