#pragma once
// ProxyRig<P>: ringpoll-proxy in-process for the tests, one unpinned shard on its own
// thread (stall detector and other scheduler options as the test asks), started on the
// given settings; the destructor shuts it down (2 s drain) and stops the engine.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "apps/proxy/metrics.h"
#include "apps/proxy/proxy.h"
#include "engine/engine.h"
#include "proxy/proxy_test_helpers.h"
#include "tuning/config.h"

namespace ringpoll::test {

// One TCP listener "main" on 127.0.0.1 (a port the kernel picks) relaying to the pool
// "main" of `ups`, with a 2 s drain.
inline proxy::ProxySettings main_listener_settings(std::vector<SocketAddress> ups,
                                                   int proxy_protocol = 0) {
  proxy::ProxySettings s;
  proxy::PoolSettings p;
  p.name = "main";
  p.upstreams = std::move(ups);
  s.pools.push_back(p);
  proxy::ListenerSettings l;
  l.name = "main";
  parse_address("127.0.0.1:0", &l.listen);
  l.pool = "main";
  l.proxy_protocol = proxy_protocol;
  s.listeners.push_back(l);
  s.drain_ns = 2'000'000'000;
  return s;
}

// A config whose proxy has one pool "p" (one upstream, 127.0.0.1:9, never contacted) and
// one TCP listener "l" on 127.0.0.1:0 relaying to it: the config tests' starting point.
inline tuning::Config one_pool_config() {
  tuning::Config c;
  tuning::ProxyPool p;
  p.name = "p";
  p.upstreams = {"127.0.0.1:9"};
  tuning::ProxyListener l;
  l.name = "l";
  l.listen = "127.0.0.1:0";
  l.pool = "p";
  c.proxy.pools = {p};
  c.proxy.listeners = {l};
  return c;
}

template <class P>
struct ProxyRig {
  explicit ProxyRig(proxy::ProxySettings s, SchedulerOptions sched = {}) : e(opts(sched)) {
    started = e.start().ok();
    if (!started) return;
    px = std::make_unique<proxy::ProxyServer<P>>(e, std::move(s));
    std::string why;
    started = px->start(&why).ok();
    EXPECT_TRUE(started) << why;
    if (started) addr = px->address(0);
  }
  ~ProxyRig() {
    if (px) px->shutdown(2'000'000'000);
    e.stop();
    e.join();
  }
  static EngineOptions opts(SchedulerOptions sched) {
    EngineOptions o;
    o.shards = 1;
    o.pin = false;
    o.sched = sched;
    return o;
  }
  uint64_t errors(proxy::ProxyError k) const { return px->metrics().total_errors(k); }
  // The admin endpoint on a free loopback port.
  ::testing::AssertionResult start_admin() {
    SocketAddress at;
    parse_address("127.0.0.1:0", &at);
    std::string why;
    if (px->start_admin(at, &why).ok()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "start_admin: " << why;
  }
  // The value of one line of the admin endpoint's /metrics ("" when absent or unanswered).
  std::string metric(const std::string& name) const {
    std::string body;
    if (admin_get(px->admin_address(), "/metrics", &body) != 200) return "";
    const size_t at = body.find("\n" + name + " ");
    if (at == std::string::npos) return "";
    const size_t v = at + name.size() + 2;
    return body.substr(v, body.find('\n', v) - v);
  }
  Engine<P> e;
  std::unique_ptr<proxy::ProxyServer<P>> px;
  SocketAddress addr;
  bool started = false;
};

}  // namespace ringpoll::test
