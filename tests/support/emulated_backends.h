#pragma once
// The emulated instantiations of the kqueue, event ports and AIX pollset backends that the
// conformance suite runs on Linux (tests only): each native backend's template over the
// Linux emulation of the calls it uses (kqueue/emulation, ports/emulation, aix/emulation).
#include "aix/emulation/pollset_emulation.h"
#include "aix/pollset_poller.h"
#include "kqueue/emulation/kqueue_emulation.h"
#include "kqueue/kqueue_poller.h"
#include "ports/emulation/ports_emulation.h"
#include "ports/ports_poller.h"

namespace ringpoll {
using EmulatedKqueuePoller = KqueuePoller<kqemu::Sys>;
static_assert(PollerBackend<EmulatedKqueuePoller>);
using EmulatedPortsPoller = PortsPoller<portemu::Sys>;
static_assert(PollerBackend<EmulatedPortsPoller>);
using EmulatedPollsetPoller = PollsetPoller<psemu::Sys>;
static_assert(PollerBackend<EmulatedPollsetPoller>);
}  // namespace ringpoll
