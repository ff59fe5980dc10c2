#pragma once
// Parking an HTTP keep-alive client between two requests, so that an upgrade can move it to
// the successor (apps/proxy/http_move.h moves it; http_client, apps/proxy/http_relay.h,
// parks and resumes). The park point is the top of the loop that reads a request head:
// nothing of a request is being answered there, and whatever the client sent past the last
// answered request (a pipelined next request, whole or in part) is in the input buffer —
// those bytes travel with the connection and the successor parses them again from their
// first byte.
//
// A client reading its next head when asked is woken by an expired read deadline (nothing
// is read then; a poke, counted in `pokes`, which the client tells from its own header-read
// timeout) and parks at once. A client in the middle of a request parks when that request
// is answered, back at the top of its loop. A client whose connection became a tunnel (101)
// never parks: it stays and drains. Transitions, on the shard's thread only:
//
//   running ──ask_park──▶ parking ──(client at the park point)──▶ parked
//   parked ──resume──▶ running (its bytes come back)     parked ──moved_away──▶ ended
//   parking (not yet parked) ──resume──▶ running (the mover gave up: it drains here)
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "apps/proxy/relay_state.h"
#include "engine/engine.h"
#include "engine/net.h"

namespace ringpoll::proxy {

// What a client moved from the predecessor starts with (apps/proxy/http_move.h): the bytes
// it had read past its last answered request, and what was left of its read deadline.
struct HttpResume {
  bool adopted = false;
  std::vector<std::byte> bytes;
  int64_t deadline_left_ns = -1;  // -1: no read deadline
};

namespace http_detail {

template <PollerBackend P>
struct HttpPark {
  TcpStream<P>* client;
  const std::string* listener;  // the listener that accepted it (the successor's, by name)
  Scheduler<P>* sched;
  bool reading = false;  // at the head read: a poke wakes its read
  bool tunnel = false;   // a byte tunnel now (101): never parks
  bool parking = false;
  bool parked = false;
  bool was_moved = false;
  uint32_t pokes = 0;
  TaskNode gate{};
  // Set when it parks: the bytes read past the last answered request (given back on
  // resume, with what the mover took from the socket), and its read deadline (0: none).
  std::vector<std::byte> bytes;
  int64_t deadline = 0;

  HttpPark(TcpStream<P>* c, const std::string* l, Scheduler<P>* s)
      : client(c), listener(l), sched(s) {}

  void ask_park() {
    if (parking || tunnel) return;
    parking = true;
    if (reading) {
      ++pokes;
      (void)client->set_read_deadline(1);
    }
  }
  // Calls the park off (parked: resumes it); moved_away: the successor has it now.
  void resume() { wake(false); }
  void moved_away() { wake(true); }
  void wake(bool away) {
    if (!parking) return;
    parking = false;
    was_moved = away;
    if (std::exchange(parked, false)) sched->make_ready(&gate);
  }
  // The client at the park point: waits for the mover's decision; true when moved.
  struct Awaiter {
    HttpPark* p;
    bool await_ready() const noexcept { return !p->parking; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      p->gate.handle = h;
      p->parked = true;
    }
    bool await_resume() const noexcept { return p->was_moved; }
  };
  Awaiter park() noexcept { return Awaiter{this}; }
};

// The plain HTTP clients of this shard, for the mover; the shard's thread only.
template <PollerBackend P>
using HttpParks = relay_detail::ShardList<HttpPark<P>>;

}  // namespace http_detail
}  // namespace ringpoll::proxy
