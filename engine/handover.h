#pragma once
// Handing listening sockets to another process, for a binary upgrade without losing a
// connection: the old process sends its listeners' descriptors over a unix socket
// (SCM_RIGHTS), the new one adopts them (TcpServer::Options::inherit_fds) instead of
// binding, so the sockets — and every connection queued on them — never close. Both
// processes accept from them until the old one stops; nothing is refused in between.
//
// The channel is a SOCK_SEQPACKET socket pair (one message per listener, then an end
// message); the new process answers with one line once it serves ("ready ...") or the
// reason it cannot. Every receive has a deadline.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../poller/errors.h"

namespace ringpoll {

struct HandedListener {
  std::string name;      // the listener's name in both configurations
  std::vector<int> fds;  // its listening sockets (one per shard with SO_REUSEPORT)
};

// At most this many descriptors per listener (the kernel's SCM_MAX_FD).
inline constexpr size_t kMaxHandedFds = 253;

// Sends the listeners (the descriptors stay open here too). Errors name the step.
Status send_listeners(int sock, const std::vector<HandedListener>& ls, std::string* why);
// Receives what send_listeners sent, within timeout_ms in all. The descriptors received
// are the caller's (close-on-exec set). On failure nothing is left open.
Status recv_listeners(int sock, int timeout_ms, std::vector<HandedListener>* out, std::string* why);
// One short text message each way ("ready generation 2 pid 1234", "failed: ...").
Status send_note(int sock, const std::string& text);
// Waits at most timeout_ms for a message; kTimeout when none came, kEof when the peer
// closed its end (the new process exited) without one.
Status recv_note(int sock, int timeout_ms, std::string* text);

// Established connections (an L4 relay between two reads, apps/proxy/relay_move.h): one
// record — the caller's bytes, up to kMaxHandedRecord — with its descriptors. A record
// longer than one message travels as a first message ("C", its length, the descriptors)
// and continuations ("D"); send_moves_end() sends the end ("E" and a short text, e.g. the
// counts of the sender).
inline constexpr size_t kMaxHandedRecord = 4u << 20;
Status send_connection(int sock, std::string_view record, const std::vector<int>& fds,
                       std::string* why);
// Waits at most timeout_ms for a record to begin (kTimeout: none began), then at most
// kRecordPartMs for each of its parts. kEof: the end came (*record is its text) or the peer
// closed the channel (*record empty). The descriptors received are the caller's; on any
// failure none is left open and *why names what was wrong.
inline constexpr int kRecordPartMs = 5'000;
Status recv_connection(int sock, int timeout_ms, std::string* record, std::vector<int>* fds,
                       std::string* why);
Status send_moves_end(int sock, const std::string& text);

// Checks that fd is a listening TCP socket; *why says what it is otherwise.
Status check_listening_tcp(int fd, std::string* why);

}  // namespace ringpoll
