// Compile-only (target ringpoll-native-typecheck): aix/pollset_poller.h's native
// system-call layer, NativePollsetSys, and the backend instantiated with it. No machine
// here runs AIX, so this code would otherwise never be compiled; here it is type-checked
// against shim-aix/sys/pollset.h, written from pollset_create(3) and friends. The object
// is never linked.
#include <sys/pollset.h>

#include <cstddef>

#include "aix/pollset_poller.h"

// The shim has the documented layout.
static_assert(sizeof(struct poll_ctl) == 8);
static_assert(offsetof(struct poll_ctl, fd) == 4);
static_assert(sizeof(struct pollfd) == 8);

namespace ringpoll {
// Every member function of the backend, compiled with the native layer.
template class PollsetPoller<NativePollsetSys>;
static_assert(PollerBackend<NativePollsetPoller>);
static_assert(std::is_same_v<NativePollsetSys::PollCtl, struct ::poll_ctl>);
}  // namespace ringpoll
