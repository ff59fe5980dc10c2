// Compile-only (target ringpoll-native-typecheck): kqueue/kqueue_poller.h's native
// system-call layer, NativeKqueueSys, and the backend instantiated with it. No machine here
// runs a BSD or macOS kernel, so this code would otherwise never be compiled; here it is
// type-checked against shim-kqueue/sys/event.h, written from kqueue(2). The object is never
// linked.
#include <sys/event.h>

#include <cstddef>

#include "kqueue/kqueue_poller.h"

// The shim has the documented layout (FreeBSD 12 and later, LP64).
static_assert(sizeof(struct kevent) == 64);
static_assert(offsetof(struct kevent, udata) == 24);
static_assert(offsetof(struct kevent, ext) == 32);

namespace ringpoll {
// Every member function of the backend, compiled with the native layer.
template class KqueuePoller<NativeKqueueSys>;
static_assert(PollerBackend<NativeKqueuePoller>);
static_assert(std::is_same_v<NativeKqueueSys::Kevent, struct ::kevent>);
}  // namespace ringpoll
