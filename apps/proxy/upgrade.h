#pragma once
// ringpoll-proxy's binary upgrade (SIGUSR2), the process side; the sockets travel with
// engine/handover.h:
//
//   old process                              new process (the binary now at the old path)
//   SIGUSR2 → fork + exec, a channel fd  →   reads RINGPOLL_UPGRADE_FD / _GENERATION
//   sends each TCP listener's sockets    →   adopts them (no bind: nothing queued is lost),
//                                            binds what is new, starts, prints its line
//   waits (upgrade timeout)              ←   "ready generation G pid P" (+ "moves L" and
//                                            "moves-http L" lines)
//   moves its plain relays of those L    →   adopts them (apps/proxy/relay_move.h)
//   and its HTTP keep-alive clients      →   serves them (apps/proxy/http_move.h)
//   stops accepting, drains, exits 0         serves
//
// If the new process exits, fails to take the sockets, or does not say it serves within
// the timeout (then it is killed), the old one keeps serving and says why: a rollback
// that costs nothing, since it never stopped accepting.
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/handover.h"

namespace ringpoll::proxy {

inline constexpr int kUpgradeTimeoutMs = 10'000;

// How this process was started, for starting its successor: the binary's path as it was
// at start (so a binary replaced there since is the one that runs) and the arguments.
struct SelfExec {
  std::string path;
  std::vector<std::string> argv;
};
SelfExec self_exec(int argc, char** argv);

// In a new process: the channel to the old one (-1: not started by an upgrade) and this
// process's generation (1 when started by hand). Both variables are removed from the
// environment. False with *why when they are malformed.
struct UpgradeEnv {
  int fd = -1;
  uint64_t generation = 1;
};
bool upgrade_env(UpgradeEnv* out, std::string* why);

// The successor, serving: its pid, the channel (still open: established connections move
// over it, apps/proxy/relay_move.h and http_move.h; the old process closes it after the
// end of its moves), and the listeners whose relays (moves) and HTTP keep-alive clients
// (http_moves) it takes (those it took over the sockets of).
struct Successor {
  pid_t pid = -1;
  int channel = -1;
  std::vector<std::string> moves;
  std::vector<std::string> http_moves;
};
// The successor's "ready" note: the generation line, then one "moves <listener>" line per
// listener whose relays it takes and one "moves-http <listener>" line per listener whose
// HTTP clients it takes (a predecessor that does not know the line ignores it).
std::string ready_note(uint64_t generation, const std::vector<std::string>& moves,
                       const std::vector<std::string>& http_moves = {});

// In the old process: starts the successor, hands it `ls`, waits for it to serve. True:
// it serves (*out); false: *why says why not, and no successor is left.
bool start_successor(const SelfExec& self, uint64_t generation,
                     const std::vector<HandedListener>& ls, int timeout_ms, Successor* out,
                     std::string* why);

}  // namespace ringpoll::proxy
