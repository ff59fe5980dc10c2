#pragma once
// The umbrella header: `#include <ringpoll/ringpoll.h>` brings the whole public API — the
// sharded engine, tasks, deadlines, the sockets API, TcpServer and the Linux backends with
// their selection. Including a single header (e.g. <ringpoll/engine/net.h>) works too:
// every public header compiles on its own.
//
// The public API is exactly what the headers installed under include/ringpoll/ declare, in
// namespace ringpoll; names in ringpoll::detail are not part of it.
#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/net.h"
#include "engine/server.h"
#ifndef _WIN32
#include "uring/uring_completion.h"  // the io_uring options of Engine<P>::set_backend_setup
#endif
#include "version.h"
