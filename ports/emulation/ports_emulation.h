#pragma once
// An event-ports EMULATION, FOR TESTING ONLY. It is not Solaris/illumos and nothing in
// production may use it: it lets the event-ports backend (ports/ports_poller.h) and the
// conformance suite run on Linux, where no machine here runs illumos.
//
// It reproduces, on top of epoll, eventfd and ppoll, the documented behaviour of
// port_create(3C), port_associate(3C), port_get(3C), port_send(3C) and port_alert(3C) that
// the backend relies on, with illumos' structs and constants:
//
//   port_associate(PORT_SOURCE_FD)  one-shot: at most one event per association. If the
//       condition already holds an event is sent at once, otherwise when it first does.
//       Retrieving the event dissociates the fd; nothing more is reported for it until it
//       is associated again. Associating an fd that is already associated replaces its
//       events and user value. portev_events carries the poll(2) bits that hold (POLLHUP,
//       POLLERR are reported even when not asked for).
//   port_dissociate   removes an association (ENOENT when there is none)
//   port_getn(list, max, *nget, timeout)   waits until at least *nget events are available
//       (or the timeout passes, a signal arrives, or the port is in alert mode), retrieves
//       up to max, and stores the number retrieved in *nget. On timeout it fails with ETIME
//       and *nget still counts the events it did retrieve: ETIME with events is not an
//       error. *nget > max is EINVAL; max == 0 stores the number of pending events in *nget
//       and returns at once.
//   port_send     queues one PORT_SOURCE_USER event
//   port_alert    events != 0 puts the port in alert mode (PORT_ALERT_SET: regardless;
//       PORT_ALERT_UPDATE: EBUSY when already alerted); events == 0 leaves it. While in alert
//       mode every port_get/port_getn returns at once with one PORT_SOURCE_ALERT event and
//       queued events stay queued.
//   close()       real ports drop an fd's association when the fd is closed. The emulation
//       cannot see close(2); it notices lazily (the fd number is invalid or names another
//       file) and drops the association silently then.
//
// As on illumos, an fd event's condition is checked again when it is retrieved (here with
// poll(2)): an association whose condition no longer holds stays associated, unreported.
//
// Known differences, none of which the backend depends on: only PORT_SOURCE_FD, _USER and
// _ALERT exist; regular files cannot be associated (epoll refuses them with EPERM); user
// events are handed out before fd events instead of in one FIFO; a peer's half-close
// (Linux POLLRDHUP) is reported as POLLIN, which is what illumos sockets report.
//
// Thread safety: every call may be made from any thread; one mutex per port, never held
// while blocking.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <ctime>

namespace ringpoll::portemu {

// illumos <port.h>.
struct port_event {
  int portev_events;
  uint16_t portev_source;
  uint16_t portev_pad;
  uintptr_t portev_object;
  void* portev_user;
};
using port_event_t = port_event;

inline constexpr int PORT_SOURCE_AIO = 1;
inline constexpr int PORT_SOURCE_TIMER = 2;
inline constexpr int PORT_SOURCE_USER = 3;
inline constexpr int PORT_SOURCE_FD = 4;
inline constexpr int PORT_SOURCE_ALERT = 5;
inline constexpr int PORT_ALERT_SET = 0x01;
inline constexpr int PORT_ALERT_UPDATE = 0x02;

// illumos <sys/poll.h> event bits (named with a k because <poll.h> owns POLLIN & co.).
inline constexpr int kPollIn = 0x0001;
inline constexpr int kPollPri = 0x0002;
inline constexpr int kPollOut = 0x0004;
inline constexpr int kPollErr = 0x0008;
inline constexpr int kPollHup = 0x0010;
inline constexpr int kPollNval = 0x0020;
inline constexpr int kPollRdNorm = 0x0040;
inline constexpr int kPollRdBand = 0x0080;
inline constexpr int kPollWrNorm = kPollOut;
inline constexpr int kPollWrBand = 0x0100;

int port_create() noexcept;
int port_associate(int port, int source, uintptr_t object, int events, void* user) noexcept;
int port_dissociate(int port, int source, uintptr_t object) noexcept;
int port_getn(int port, port_event_t list[], unsigned max, unsigned* nget,
              const timespec* timeout) noexcept;
int port_send(int port, int events, void* user) noexcept;
int port_alert(int port, int flags, int events, void* user) noexcept;
// close(2) for an emulated port (and plain close(2) for any other fd).
int close(int fd) noexcept;

// Test seam: called by Sys::port_getn below after a call that succeeded or timed out,
// with the n events it returned and room for max; it may rewrite them or append synthetic
// ones and returns the new count, which the backend's real dispatch then handles (tests
// feed POLLERR alone). Never set outside tests.
using PortGetnHook = unsigned (*)(port_event_t* list, unsigned n, unsigned max);
inline std::atomic<PortGetnHook> g_port_getn_hook{nullptr};

// The system-call layer the backend is instantiated with (PortsPoller<portemu::Sys>).
struct Sys {
  using PortEvent = port_event_t;
  static constexpr const char* kName = "ports-emulated";
  static constexpr int kSourceFd = PORT_SOURCE_FD;
  static constexpr int kSourceUser = PORT_SOURCE_USER;
  static constexpr int kPollIn = portemu::kPollIn;
  static constexpr int kPollOut = portemu::kPollOut;
  static constexpr int kPollErr = portemu::kPollErr;
  static constexpr int kPollHup = portemu::kPollHup;

  static int port_create() noexcept { return portemu::port_create(); }
  static int port_associate(int port, int source, uintptr_t object, int events,
                            void* user) noexcept {
    return portemu::port_associate(port, source, object, events, user);
  }
  static int port_dissociate(int port, int source, uintptr_t object) noexcept {
    return portemu::port_dissociate(port, source, object);
  }
  static int port_getn(int port, PortEvent list[], unsigned max, unsigned* nget,
                       const timespec* timeout) noexcept {
    const int r = portemu::port_getn(port, list, max, nget, timeout);
    const int e = errno;
    if (r == 0 || e == ETIME) {  // ETIME may still have delivered *nget events
      if (const PortGetnHook hook = g_port_getn_hook.load(std::memory_order_relaxed)) {
        *nget = hook(list, *nget, max);
        errno = e;
      }
    }
    return r;
  }
  static int port_send(int port, int events, void* user) noexcept {
    return portemu::port_send(port, events, user);
  }
  static int close(int fd) noexcept { return portemu::close(fd); }
};

}  // namespace ringpoll::portemu
