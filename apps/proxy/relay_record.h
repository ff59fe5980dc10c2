#pragma once
// RelayRecord: what an L4 relay carries with it when an upgrade moves it to the next
// process (apps/proxy/relay_move.h sends it with both descriptors, engine/handover.h).
// Text lines, then the buffered bytes:
//
//   ringpoll-relay 1
//   listener <name>          the listener that accepted the client (its metrics)
//   pool <name>              the pool its upstream is in ("" when none)
//   upstream <address>       that upstream (the pool's connection count)
//   idle <idle_ns> <left_ns> the idle timeout and what is left of it (0 0: none)
//   up <bytes> <ended>       client → upstream: bytes read, not yet written; 1 once the
//   down <bytes> <ended>     client's end of stream was read (the upstream gets its FIN
//                            after those bytes); upstream → client the same
//   (an empty line, then the up bytes, then the down bytes)
//
// decode_relay_record refuses anything else and says what and where ("line 3: ...").
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringpoll::proxy {

struct RelayRecord {
  struct Direction {
    std::vector<std::byte> pending;  // read from the source, not yet written to the sink
    bool ended = false;              // the source's end of stream was read
  };
  std::string listener;
  std::string pool;
  std::string upstream;
  int64_t idle_ns = 0;
  int64_t idle_left_ns = 0;
  Direction up, down;
};

inline constexpr int kRelayRecordVersion = 1;

// The record's bytes; "" with *why when a name cannot be carried (a newline in it).
std::string encode_relay_record(const RelayRecord& r, std::string* why);
// False with *why naming the line and what is wrong; *out is left as it was.
bool decode_relay_record(std::string_view text, RelayRecord* out, std::string* why);

// HttpClientRecord: what an HTTP keep-alive client carries with it, moved between two
// requests (apps/proxy/http_move.h sends it with the client's descriptor):
//
//   ringpoll-http 1
//   listener <name>          the HTTP listener that accepted it
//   deadline <left_ns>|none  what is left of its read deadline (none: it has none)
//   bytes <n>                read past its last answered request (a pipelined next one)
//   (an empty line, then the bytes)
//
// Its end of stream, if the client sent one, is not carried: the socket reports it again.
struct HttpClientRecord {
  std::string listener;
  int64_t deadline_left_ns = -1;  // -1: none
  std::vector<std::byte> bytes;
};
inline constexpr int kHttpRecordVersion = 1;
// Whether text is an HttpClientRecord (not a RelayRecord) by its header line.
bool is_http_record(std::string_view text);
std::string encode_http_record(const HttpClientRecord& r, std::string* why);
bool decode_http_record(std::string_view text, HttpClientRecord* out, std::string* why);

}  // namespace ringpoll::proxy
