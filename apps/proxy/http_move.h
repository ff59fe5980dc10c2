#pragma once
// Moving HTTP keep-alive clients to an upgrade's successor (issue 20): the old process,
// once its successor serves and after its L4 relays (apps/proxy/relay_move.h), hands each
// plain HTTP client between two requests over the upgrade's unix socket — its descriptor
// (SCM_RIGHTS, engine/handover.h) and an HttpClientRecord (apps/proxy/relay_record.h) with
// the bytes it read past its last answered request (a pipelined next request, whole or in
// part) and what is left of its read deadline — and the successor serves it from there
// (http_client with an HttpResume, apps/proxy/http_relay.h). Its upstream keep-alive
// connections stay: they are this process's, and close with it; the successor opens its
// own. A TLS client drains (its record state cannot travel), and so does a tunnel (101).
//
// On each shard, move_http_clients():
//   1. asks every plain HTTP client of the listeners the successor takes to park
//      (apps/proxy/http_park.h): one waiting for its next request parks at once; one in
//      the middle of a request parks once that request is answered;
//   2. every millisecond, moves the clients parked since: stops receiving ahead on their
//      sockets (io_uring completion mode: the multishot recv is cancelled, and its last
//      completion waited for, at most kRecvStopBoundNs), adds what was received ahead to
//      the bytes, and sends the record with the descriptor; sent, the client ends here
//      without touching the socket; not sent, it resumes with its bytes;
//   3. after kParkBoundNs (2 s), a client still in its request (a slow upstream, a long
//      download) is let go: it finishes here and drains, as every connection did before
//      moves existed — its response says Connection: close, and the client reconnects to
//      the successor for its next request.
// Each client either moves or drains; none is cut.
#include <algorithm>
#include <string>
#include <vector>

#include "apps/proxy/http_park.h"
#include "apps/proxy/relay_move.h"
#include "apps/proxy/relay_record.h"
#include "engine/engine.h"
#include "engine/handover.h"

namespace ringpoll::proxy {

namespace http_detail {

// Sends the parked clients in `batch` to the successor at `sock`; each ends moved away or
// resumed. Counts into *out.
template <PollerBackend P>
Task<void> hand_over(int sock, const std::vector<HttpPark<P>*>& batch, MoveCounts* out) {
  for (HttpPark<P>* c : batch) c->client->poll_fd().stop_recv_ahead();
  const auto stopped = [](HttpPark<P>* c) { return c->client->poll_fd().recv_ahead_stopped(); };
  co_await wait_at_most<P>([&] { return std::all_of(batch.begin(), batch.end(), stopped); },
                           kRecvStopBoundNs);
  for (HttpPark<P>* c : batch) {
    bool ok = out->error.empty() && stopped(c);
    bool eof = false;  // not carried: the successor's read of the socket reports it again
    // The bytes taken are the client's either way: given back if it stays.
    if (ok && c->client->poll_fd().take_received(&c->bytes, &eof) != 0) ok = false;
    HttpClientRecord rec;
    rec.listener = *c->listener;
    if (c->deadline > 0) rec.deadline_left_ns = std::max<int64_t>(c->deadline - mono_now_ns(), 0);
    rec.bytes = c->bytes;
    std::string text, why;
    if (ok) {
      text = encode_http_record(rec, &why);
      ok = !text.empty();
    }
    send_or_resume(sock, ok, text, {c->client->fd()}, c, out);
  }
}

}  // namespace http_detail

// On a shard: moves its plain HTTP clients of `listeners` to the successor at `sock`
// (above), adding to *out; out->present counts every HTTP client of the shard (those that
// do not move drain).
template <PollerBackend P>
Task<void> move_http_clients(int sock, const std::vector<std::string>& listeners, MoveCounts* out) {
  using http_detail::HttpPark;
  Scheduler<P>& sched = Engine<P>::current()->sched();
  std::vector<HttpPark<P>*>& all = http_detail::HttpParks<P>::local();
  out->present += all.size();
  for (HttpPark<P>* c : all)
    if (std::find(listeners.begin(), listeners.end(), *c->listener) != listeners.end())
      c->ask_park();
  // Clients asked and not parked may end (close) while this waits: `all` is looked at
  // afresh each round; parked ones cannot end until they are moved or resumed.
  const int64_t park_end = mono_now_ns() + kParkBoundNs;
  for (;;) {
    std::vector<HttpPark<P>*> batch;
    bool waiting = false;
    for (HttpPark<P>* c : all) {
      if (c->parking && c->parked) batch.push_back(c);
      waiting = waiting || (c->parking && !c->parked);
    }
    if (!batch.empty()) co_await http_detail::hand_over(sock, batch, out);
    if (!waiting || mono_now_ns() >= park_end) break;
    co_await sched.sleep_for(1'000'000);
  }
  // The rest stay, in their request: they finish it here and drain.
  for (HttpPark<P>* c : std::vector<HttpPark<P>*>(all)) {
    if (!c->parking) continue;
    c->resume();
    ++out->stayed;
  }
}

}  // namespace ringpoll::proxy
