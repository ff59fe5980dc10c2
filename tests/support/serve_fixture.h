#pragma once
// ringpoll-serve's handlers on an in-process engine: a TcpServer running the echo or HTTP
// handler on 127.0.0.1, any port (serve_test.cc, fairness_test.cc).
#include <memory>
#include <type_traits>

#include "apps/serve/handlers.h"
#include "engine/server.h"
#include "uring/uring_completion.h"

namespace ringpoll::test {

template <class P>
class ServeFixture {
 public:
  ServeFixture(const serve::ServeSettings& s, bool http, int shards = 2) : settings_(s) {
    EngineOptions o;
    o.shards = shards;
    o.pin = false;
    e_ = std::make_unique<Engine<P>>(o);
    started_ = e_->start().ok();
    if (!started_) return;
    srv_ = std::make_unique<TcpServer<P>>(*e_);
    SocketAddress at;
    parse_address("127.0.0.1:0", &at);
    typename TcpServer<P>::Handler h;
    if (http) {
      h = [this](TcpStream<P>& c) { return serve::serve_http<P>(c, settings_, &counters_); };
    } else {
      h = [this](TcpStream<P>& c) { return serve::serve_echo<P>(c, settings_, &counters_); };
    }
    started_ = srv_->start(at, std::move(h)).ok();
  }
  ~ServeFixture() {
    if (srv_) srv_->shutdown(0);
    e_->stop();
    e_->join();
  }
  bool started() const { return started_; }
  SocketAddress address() const { return srv_->address(); }
  int64_t live() const { return counters_.live.load(); }

  // io_uring completion mode: shard 0's buffer-ring counters (read on the shard).
  static constexpr bool kRing = std::is_base_of_v<UringCompletionPoller, P>;
  UringCompletionPoller::Counters ring() {
    if constexpr (kRing) {
      return Engine<P>::call(e_->shard(0),
                             [] { return Engine<P>::current()->sched().backend().counters(); });
    } else {
      return {};
    }
  }

 private:
  serve::ServeSettings settings_;
  serve::ServeCounters counters_;
  std::unique_ptr<Engine<P>> e_;
  std::unique_ptr<TcpServer<P>> srv_;
  bool started_ = false;
};

}  // namespace ringpoll::test
