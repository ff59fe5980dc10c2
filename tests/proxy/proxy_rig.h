#pragma once
// ProxyRig<P>: a ProxyServer in-process for the proxy's tests, on an engine of one
// unpinned shard, started with the settings given (started says whether it did; addr is
// listener 0's bound address) and shut down with a 2 s drain when the rig goes.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "apps/proxy/proxy.h"
#include "engine/engine.h"
#include "support/test_env.h"

namespace ringpoll::test {

template <PollerBackend P>
struct ProxyRig {
  explicit ProxyRig(proxy::ProxySettings s) : e(opts()) {
    started = e.start().ok();
    if (!started) return;
    px = std::make_unique<proxy::ProxyServer<P>>(e, std::move(s));
    std::string why;
    started = px->start(&why).ok();
    EXPECT_TRUE(started) << why;
    if (started) addr = px->address(0);
  }
  ~ProxyRig() {
    if (px) px->shutdown(2 * kSec);
    e.stop();
    e.join();
  }
  ProxyRig(const ProxyRig&) = delete;
  ProxyRig& operator=(const ProxyRig&) = delete;
  static EngineOptions opts() {
    EngineOptions o;
    o.shards = 1;
    o.pin = false;
    return o;
  }
  Engine<P> e;
  std::unique_ptr<proxy::ProxyServer<P>> px;
  SocketAddress addr;
  bool started = false;
};

}  // namespace ringpoll::test
