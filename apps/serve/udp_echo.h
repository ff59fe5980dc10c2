#pragma once
// ringpoll-serve --mode udp-echo: every shard owns one packet queue (packet/packet_io.h)
// and echoes each datagram to its sender from inside its loop (PacketSource + EchoHandler).
// The queue type is the path the config chose (packet.path); this file only wires queues
// to shards, prints the first line, waits for a stop signal and reports the counters.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/server.h"
#include "packet/packet_source.h"

namespace ringpoll::serve {

struct UdpEchoTotals {
  packet::PacketStats stats;
  uint64_t echoed = 0;
};

// open(queue, shard, &why) opens shard's queue. Returns the exit status: 0 after a stop
// signal, 1 when a queue cannot be opened (the message names the shard and the reason).
template <PollerBackend P, packet::PacketQueue Q, class Open, class Ready>
int run_udp_echo(Engine<P>& e, const char* program, Open open, Ready ready) {
  using Source = packet::PacketSource<Q, packet::EchoHandler>;
  std::vector<std::unique_ptr<Q>> queues(e.size());
  std::vector<std::unique_ptr<Source>> sources(e.size());
  // Shard by shard, in order: shard 0 may pick the port that the others then share.
  for (size_t i = 0; i < e.size(); ++i) {
    std::string why;
    const Status st = Engine<P>::call(e.shard(i), [&]() -> Status {
      queues[i] = std::make_unique<Q>();
      const Status s = open(*queues[i], static_cast<int>(i), &why);
      if (!s.ok()) return s;
      sources[i] = std::make_unique<Source>(*queues[i], packet::EchoHandler{});
      e.shard(i).sched().attach_source(sources[i].get());
      return s;
    });
    if (!st.ok()) {
      std::fprintf(stderr, "%s: shard %zu: cannot open its %s queue: %s\n", program, i,
                   packet::to_string(Q::kPath), why.empty() ? st.message() : why.c_str());
      for (size_t j = 0; j < i; ++j) {
        Engine<P>::call(e.shard(j), [&] { e.shard(j).sched().detach_source(sources[j].get()); });
      }
      return 1;
    }
  }
  ready(*queues[0]);
  std::thread sig = shutdown_on_signals([] {},
                                        [] {
                                          std::fflush(stdout);
                                          std::_Exit(0);
                                        });
  sig.join();
  UdpEchoTotals t;
  for (size_t i = 0; i < e.size(); ++i) {
    Engine<P>::call(e.shard(i), [&] {
      e.shard(i).sched().detach_source(sources[i].get());
      const packet::PacketStats s = queues[i]->stats();
      t.stats.rx_packets += s.rx_packets;
      t.stats.tx_packets += s.tx_packets;
      t.stats.rx_dropped += s.rx_dropped;
      t.stats.rx_bad_checksum += s.rx_bad_checksum;
      t.stats.tx_dropped += s.tx_dropped;
      t.stats.tx_no_neighbor += s.tx_no_neighbor;
      t.stats.arp_replies += s.arp_replies;
      t.stats.other_frames += s.other_frames;
      t.echoed += sources[i]->handler().echoed;
      queues[i]->close();
    });
  }
  std::fprintf(stderr,
               "%s: stopped: rx %llu, echoed %llu, rx dropped %llu, bad checksum %llu, tx dropped "
               "%llu, no neighbour %llu, ARP replies %llu, other frames %llu\n",
               program, static_cast<unsigned long long>(t.stats.rx_packets),
               static_cast<unsigned long long>(t.echoed),
               static_cast<unsigned long long>(t.stats.rx_dropped),
               static_cast<unsigned long long>(t.stats.rx_bad_checksum),
               static_cast<unsigned long long>(t.stats.tx_dropped),
               static_cast<unsigned long long>(t.stats.tx_no_neighbor),
               static_cast<unsigned long long>(t.stats.arp_replies),
               static_cast<unsigned long long>(t.stats.other_frames));
  return 0;
}

}  // namespace ringpoll::serve
