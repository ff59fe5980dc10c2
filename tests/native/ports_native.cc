// Compile-only (target ringpoll-native-typecheck): ports/ports_poller.h's native
// system-call layer, NativePortsSys, and the backend instantiated with it. No machine here
// runs Solaris or illumos, so this code would otherwise never be compiled; here it is
// type-checked against shim-ports/port.h, written from port_create(3C) and friends. The
// object is never linked.
#include <port.h>

#include <cstddef>

#include "ports/ports_poller.h"

// The shim has the documented layout (LP64).
static_assert(sizeof(port_event_t) == 24);
static_assert(offsetof(port_event_t, portev_object) == 8);
static_assert(offsetof(port_event_t, portev_user) == 16);

namespace ringpoll {
// Every member function of the backend, compiled with the native layer.
template class PortsPoller<NativePortsSys>;
static_assert(PollerBackend<NativePortsPoller>);
static_assert(std::is_same_v<NativePortsSys::PortEvent, port_event_t>);
}  // namespace ringpoll
