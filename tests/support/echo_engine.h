#pragma once
// EchoEngine<P>: a TcpServer that echoes, on an engine of its own (one unpinned shard), on
// 127.0.0.1 with a port the kernel picks. For tests that need a real server under load or
// faults (FaultInjection.*) or an upstream that scales past a thread per connection
// (ProxyHardening.*). stop() (or the destructor) shuts it down and joins the engine.
#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>

#include "engine/server.h"

namespace ringpoll::test {

template <PollerBackend P>
class EchoEngine {
 public:
  // setup: the backend's options, before its ring is set up (Engine::set_backend_setup).
  explicit EchoEngine(typename TcpServer<P>::Options so = {}, std::function<void(P&)> setup = {})
      : e_(opts()) {
    if (setup) e_.set_backend_setup(std::move(setup));
    ok_ = e_.start().ok();
    if (!ok_) return;
    srv_ = std::make_unique<TcpServer<P>>(e_, so);
    SocketAddress at;
    parse_address("127.0.0.1:0", &at);
    ok_ = srv_->start(at, echo).ok();
  }
  ~EchoEngine() { stop(); }
  EchoEngine(const EchoEngine&) = delete;
  EchoEngine& operator=(const EchoEngine&) = delete;

  bool ok() const { return ok_; }
  SocketAddress address() const { return srv_->address(); }
  Engine<P>& engine() { return e_; }
  TcpServer<P>& server() { return *srv_; }
  void stop() {
    if (srv_) srv_->shutdown(1'000'000'000);
    srv_.reset();
    e_.stop();
    e_.join();
  }

  static Task<void> echo(TcpStream<P>& c) {
    std::array<std::byte, 4096> buf;
    for (;;) {
      const IoResult r = co_await c.read(buf);
      if (!r.ok()) co_return;
      const IoResult w = co_await c.write(std::span<const std::byte>(buf.data(), r.n));
      if (!w.ok()) co_return;
    }
  }

 private:
  static EngineOptions opts() {
    EngineOptions o;
    o.shards = 1;
    o.pin = false;
    return o;
  }
  Engine<P> e_;
  std::unique_ptr<TcpServer<P>> srv_;
  bool ok_ = false;
};

}  // namespace ringpoll::test
