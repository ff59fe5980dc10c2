#pragma once
// Moving established L4 relays to an upgrade's successor (issue 20): the old process, once
// its successor serves, hands each plain relay (not TLS, not HTTP) over the upgrade's unix
// socket instead of draining it — both descriptors (SCM_RIGHTS, engine/handover.h) and a
// RelayRecord (apps/proxy/relay_record.h) with what it buffered, its half-close state and
// its idle deadline — and the successor carries it on (relay_adopted, apps/proxy/relay.h).
//
// On each shard, move_relays():
//   1. asks every movable relay of the listeners the successor takes to park: each pump
//      stops at the top of its loop, between two reads (a waiting read is woken by an
//      expired deadline and reads nothing; a write in flight finishes first);
//   2. waits at most kParkBoundNs (2 s) for them; a relay not parked by then (a send that does
//      not finish: a slow receiver) resumes here and drains, as every connection did
//      before moves existed;
//   3. stops receiving ahead on both sockets (io_uring completion mode: the multishot recv
//      into the shard's provided buffers is cancelled) and waits for the cancel's last
//      completion, then copies what was received ahead into the record — nothing a
//      completion delivered stays behind in a buffer of this process;
//   4. sends the record with both descriptors; sent, the relay ends here without touching
//      the sockets (this process's close is only its own reference); not sent, it
//      resumes with the copied bytes written first.
// Each relay either moves or stays and drains; none is cut.
#include <algorithm>
#include <string>
#include <vector>

#include "apps/proxy/relay.h"
#include "apps/proxy/relay_record.h"
#include "apps/proxy/relay_state.h"
#include "engine/engine.h"
#include "engine/handover.h"

namespace ringpoll::proxy {

// How long a relay may take to reach a point between two reads (its write in flight
// finishing) before it stays and drains instead: a receiver that takes nothing for this
// long is a slow one. Generous because a loaded machine can leave a shard without the CPU
// for hundreds of milliseconds (seen: 660 ms with 1,000 streams on 2 busy cores).
inline constexpr int64_t kParkBoundNs = 2'000'000'000;
// How long the cancel of a multishot recv may take to complete before the relay stays.
inline constexpr int64_t kRecvStopBoundNs = 1'000'000'000;

struct MoveCounts {
  uint64_t moved = 0;
  uint64_t stayed = 0;  // movable kind, but not moved: they drain
  // Why L4 relays stayed: still writing to a slow receiver after both park bounds; ending
  // (a pump had finished, or the relay failed); their ring reads not stopped in time.
  uint64_t slow_to_park = 0, ending = 0, reads_not_stopped = 0;
  uint64_t late_moves = 0;  // moved on the second chance (parked after the first bound)
  uint64_t draining = 0;    // every connection left to drain (any kind; ProxyServer's count)
  uint64_t present = 0;     // HTTP: every client on the shard when the move began
  std::string error;        // the channel failed (the rest stayed)
};

// Sleeps a millisecond at a time (on the calling shard) until done() or bound_ns passed.
template <PollerBackend P, class Done>
Task<void> wait_at_most(Done done, int64_t bound_ns) {
  Scheduler<P>& sched = Engine<P>::current()->sched();
  const int64_t end = mono_now_ns() + bound_ns;
  while (!done() && mono_now_ns() < end) co_await sched.sleep_for(1'000'000);
}

// A parked connection (ok: ready to go) is sent with its record and descriptors and let
// go here, or resumed here. A failed send breaks the channel: out->error, nothing more moves.
template <class Parked>
void send_or_resume(int sock, bool ok, const std::string& rec, const std::vector<int>& fds,
                    Parked* c, MoveCounts* out) {
  std::string why;
  if (ok && !send_connection(sock, rec, fds, &why).ok()) {
    out->error = why;
    ok = false;
  }
  if (ok) {
    c->moved_away();
    ++out->moved;
  } else {
    c->resume();
    ++out->stayed;
  }
}

namespace relay_detail {

// The record of a parked relay; false (with *why) when it cannot be encoded.
template <PollerBackend P>
bool record_of(const Relay<P>& r, std::string* out, std::string* why) {
  RelayRecord rec;
  rec.listener = std::string(r.origin->listener);
  rec.pool = std::string(r.origin->pool);
  rec.upstream = std::string(r.origin->upstream);
  rec.idle_ns = r.idle_ns;
  if (r.idle_ns > 0)
    rec.idle_left_ns =
        std::clamp<int64_t>(r.last_activity + r.idle_ns - mono_now_ns(), 0, r.idle_ns);
  for (auto [c, d] : {std::pair{r.carry[0], &rec.up}, std::pair{r.carry[1], &rec.down}}) {
    d->pending = c->pending;
    d->ended = c->ended || c->eof_pending;
  }
  *out = encode_relay_record(rec, why);
  return !out->empty();
}

template <class R>
bool wants(const R& r, const std::vector<std::string>& listeners) {
  return r.origin &&
         std::find(listeners.begin(), listeners.end(), r.origin->listener) != listeners.end();
}

// While it lives, no relay of this shard starts to hibernate (Relay::moves_running).
template <PollerBackend P>
struct NoHibernation {
  NoHibernation() { Relay<P>::moves_flag() = true; }
  ~NoHibernation() { Relay<P>::moves_flag() = false; }
  NoHibernation(const NoHibernation&) = delete;
  NoHibernation& operator=(const NoHibernation&) = delete;
};

}  // namespace relay_detail

namespace relay_detail {

// Moves the parked relays in `parked` (settled, movable): stops their ring reads ahead,
// then sends each with what it took, or resumes it here (it stays and drains).
template <PollerBackend P>
Task<void> send_parked(int sock, const std::vector<Relay<P>*>& parked, MoveCounts* out) {
  for (Relay<P>* r : parked) {
    r->client->poll_fd().stop_recv_ahead();
    r->upstream->poll_fd().stop_recv_ahead();
  }
  const auto stopped = [](Relay<P>* r) {
    return r->client->poll_fd().recv_ahead_stopped() && r->upstream->poll_fd().recv_ahead_stopped();
  };
  co_await wait_at_most<P>([&] { return std::all_of(parked.begin(), parked.end(), stopped); },
                           kRecvStopBoundNs);
  for (Relay<P>* r : parked) {
    const bool reads_stopped = stopped(r);
    bool ok = out->error.empty() && reads_stopped;
    if (!reads_stopped) ++out->reads_not_stopped;
    for (auto [s, c] : {std::pair{r->client, r->carry[0]}, std::pair{r->upstream, r->carry[1]}}) {
      bool eof = false;
      // The bytes taken are the relay's either way: written first if it stays.
      if (ok && s->poll_fd().take_received(&c->pending, &eof) != 0) ok = false;
      c->eof_pending = c->eof_pending || eof;
    }
    std::string rec, why;
    if (ok && !record_of(*r, &rec, &why)) ok = false;
    send_or_resume(sock, ok, rec, {r->client->fd(), r->upstream->fd()}, r, out);
  }
}

}  // namespace relay_detail

// On a shard: moves its relays of `listeners` to the successor at `sock` (above), adding
// to *out. Those parked within kParkBoundNs go first; the ones still on their way (a write
// to a slow receiver in flight: a loaded machine) get one more bound and go then, so that
// a late relay moves rather than drains (and, being long-lived, is cut at the drain
// deadline). What has not parked after both stays.
template <PollerBackend P>
Task<void> move_relays(int sock, const std::vector<std::string>& listeners, MoveCounts* out) {
  using relay_detail::MovableRelays;
  using relay_detail::Relay;
  using relay_detail::SleepingRelays;
  relay_detail::NoHibernation<P> no_hibernation;
  std::vector<Relay<P>*>& all = MovableRelays<P>::local();
  // A hibernation under way is called off (its pumps go on), and the hibernating relays of
  // these listeners wake and relay again (relay_loop), so that they park for the move below
  // as any other. They are back as relays within a pass of the shard's loop.
  for (Relay<P>* r : std::vector<Relay<P>*>(all)) r->cancel_hibernation();
  std::vector<relay_detail::Sleeper<P>*>& sleeping = SleepingRelays<P>::local();
  for (auto* z : sleeping) {
    if (!relay_detail::wants(*z, listeners)) continue;
    z->for_move = true;
    z->wake();
  }
  co_await wait_at_most<P>(
      [&] {
        return std::none_of(sleeping.begin(), sleeping.end(),
                            [](const relay_detail::Sleeper<P>* z) { return z->for_move; });
      },
      kParkBoundNs);
  for (Relay<P>* r : all)
    if (relay_detail::wants(*r, listeners)) r->ask_park();
  const auto all_settled = [&] {
    return std::all_of(all.begin(), all.end(),
                       [](const Relay<P>* r) { return !r->parking || r->settled(); });
  };
  for (int pass = 0; pass < 2; ++pass) {
    co_await wait_at_most<P>(all_settled, kParkBoundNs);
    // Parked relays cannot end while parked (their pumps wait at the gate), so the
    // pointers stay good across the waits in send_parked; the others resume now, or (the
    // first pass, still on their way) are waited for once more.
    std::vector<Relay<P>*> parked;
    for (Relay<P>* r : std::vector<Relay<P>*>(all)) {
      if (!r->parking) continue;
      if (r->movable()) {
        parked.push_back(r);
      } else if (r->settled() || pass == 1) {
        ++(r->settled() ? out->ending : out->slow_to_park);
        r->resume();
        ++out->stayed;
      }
    }
    const uint64_t before = out->moved;
    co_await relay_detail::send_parked<P>(sock, parked, out);
    if (pass == 1) out->late_moves += out->moved - before;
    if (!std::any_of(all.begin(), all.end(), [](const Relay<P>* r) { return r->parking; })) break;
  }
}

}  // namespace ringpoll::proxy
