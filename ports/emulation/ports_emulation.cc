// The event-ports emulation (FOR TESTING ONLY); what it reproduces is listed in the header.
//
// Structure: a port is an epoll instance. An associated fd has one edge-triggered epoll
// registration that only says "something happened"; each wake-up puts the association on
// the port's candidate list, and port_getn() checks each candidate's condition with poll(2)
// as it hands events out. A delivered event removes the association and its registration
// (one-shot). An eventfd in the same epoll set interrupts a blocked port_getn() for
// port_send, port_alert and associations made by other threads.
#include "ports/emulation/ports_emulation.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace ringpoll::portemu {
namespace {

constexpr uint64_t kSignalTag = 0;  // the eventfd; fd registrations carry gen >= 1
constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr int kHarvestBatch = 64;

struct Assoc {
  int events = 0;  // illumos poll bits asked for
  void* user = nullptr;
  uint32_t gen = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  bool queued = false;
};

struct Port {
  std::mutex mu;
  int epfd = -1;
  int sigfd = -1;
  uint32_t next_gen = 1;
  std::unordered_map<int, Assoc> fds;
  std::deque<int> candidates;
  std::deque<port_event_t> user_events;
  bool alert = false;
  int alert_events = 0;
  void* alert_user = nullptr;
};

std::mutex g_mu;
std::unordered_map<int, std::shared_ptr<Port>>& registry() {
  static auto* r = new std::unordered_map<int, std::shared_ptr<Port>>;
  return *r;
}

std::shared_ptr<Port> find_port(int port) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = registry().find(port);
  return it == registry().end() ? nullptr : it->second;
}

void signal(Port& p) {
  const uint64_t one = 1;
  while (::write(p.sigfd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void enqueue(Port& p, int fd, Assoc& a) {
  if (a.queued) return;
  a.queued = true;
  p.candidates.push_back(fd);
}

bool same_file(const Assoc& a, int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_dev == a.dev && st.st_ino == a.ino;
}

// Linux revents -> illumos bits.
int to_illumos(short rev) {
  int r = 0;
  if (rev & (POLLIN | POLLRDHUP)) r |= kPollIn;  // a peer's half-close reads as EOF
  if (rev & POLLPRI) r |= kPollPri;
  if (rev & POLLOUT) r |= kPollOut;
  if (rev & POLLERR) r |= kPollErr;
  if (rev & POLLHUP) r |= kPollHup;
  if (rev & POLLNVAL) r |= kPollNval;
  if (rev & POLLRDNORM) r |= kPollRdNorm;
  if (rev & POLLRDBAND) r |= kPollRdBand;
  if (rev & POLLWRNORM) r |= kPollWrNorm;
  if (rev & POLLWRBAND) r |= kPollWrBand;
  return r;
}

void harvest(Port& p) {
  epoll_event evs[kHarvestBatch];
  for (;;) {
    const int n = epoll_wait(p.epfd, evs, kHarvestBatch, 0);
    if (n <= 0) return;
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = evs[i].data.u64;
      if (tag == kSignalTag) {
        uint64_t buf;
        while (::read(p.sigfd, &buf, sizeof buf) < 0 && errno == EINTR) {
        }
        continue;
      }
      const int fd = static_cast<int>(tag >> 32);
      auto it = p.fds.find(fd);
      if (it == p.fds.end() || it->second.gen != static_cast<uint32_t>(tag)) continue;
      enqueue(p, fd, it->second);
    }
    if (n < kHarvestBatch) return;
  }
}

// The association's condition now: illumos bits (0: nothing to report), or -1 when the fd
// was closed behind our back.
int evaluate(int fd, const Assoc& a) {
  pollfd q{
      fd,
      POLLIN | POLLPRI | POLLOUT | POLLRDHUP | POLLRDNORM | POLLRDBAND | POLLWRNORM | POLLWRBAND,
      0};
  if (::poll(&q, 1, 0) < 0 || (q.revents & POLLNVAL) || !same_file(a, fd)) return -1;
  return to_illumos(q.revents) & (a.events | kPollErr | kPollHup);
}

// Hands out up to `room` events; returns how many.
unsigned collect(Port& p, port_event_t* list, unsigned room) {
  unsigned n = 0;
  while (n < room && !p.user_events.empty()) {
    list[n++] = p.user_events.front();
    p.user_events.pop_front();
  }
  size_t budget = p.candidates.size();
  while (budget-- > 0 && n < room) {
    const int fd = p.candidates.front();
    p.candidates.pop_front();
    auto it = p.fds.find(fd);
    if (it == p.fds.end() || !it->second.queued) continue;
    it->second.queued = false;
    const int ev = evaluate(fd, it->second);
    if (ev < 0) {  // closed: illumos dropped the association at close(2)
      p.fds.erase(it);
      continue;
    }
    if (ev == 0) continue;  // still associated, waiting for the next wake-up
    port_event_t& e = list[n++];
    e.portev_events = ev;
    e.portev_source = PORT_SOURCE_FD;
    e.portev_pad = 0;
    e.portev_object = static_cast<uintptr_t>(fd);
    e.portev_user = it->second.user;
    // One-shot: retrieving the event ends the association.
    epoll_ctl(p.epfd, EPOLL_CTL_DEL, fd, nullptr);
    p.fds.erase(it);
  }
  return n;
}

// Number of events a port_getn could retrieve now, without retrieving them.
unsigned pending(Port& p) {
  unsigned n = static_cast<unsigned>(p.user_events.size());
  for (int fd : p.candidates) {
    auto it = p.fds.find(fd);
    if (it != p.fds.end() && it->second.queued && evaluate(fd, it->second) > 0) ++n;
  }
  return n;
}

int64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * kNsPerSec + t.tv_nsec;
}

int fail(int e) {
  errno = e;
  return -1;
}

}  // namespace

int port_create() noexcept {
  auto p = std::make_shared<Port>();
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0) return -1;
  p->sigfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kSignalTag;
  if (p->sigfd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->sigfd, &ev) < 0) {
    const int e = errno;
    if (p->sigfd >= 0) ::close(p->sigfd);
    ::close(p->epfd);
    return fail(e);
  }
  const int fd = p->epfd;
  std::lock_guard<std::mutex> g(g_mu);
  registry()[fd] = std::move(p);
  return fd;
}

int close(int fd) noexcept {
  std::shared_ptr<Port> p;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = registry().find(fd);
    if (it != registry().end()) {
      p = std::move(it->second);
      registry().erase(it);
    }
  }
  if (p) ::close(p->sigfd);
  return ::close(fd);
}

int port_associate(int port, int source, uintptr_t object, int events, void* user) noexcept {
  std::shared_ptr<Port> pp = find_port(port);
  if (!pp) return fail(EBADF);
  if (source != PORT_SOURCE_FD) return fail(EINVAL);
  if (object > static_cast<uintptr_t>(INT32_MAX)) return fail(EBADF);
  const int fd = static_cast<int>(object);
  struct stat st;
  if (fstat(fd, &st) < 0) return fail(EBADF);
  Port& p = *pp;
  std::lock_guard<std::mutex> g(p.mu);
  auto it = p.fds.find(fd);
  if (it != p.fds.end() && (it->second.dev != st.st_dev || it->second.ino != st.st_ino)) {
    p.fds.erase(it);  // a stale association of a file closed behind our back
    it = p.fds.end();
  }
  if (it == p.fds.end()) {
    Assoc a;
    a.gen = p.next_gen++;
    if (p.next_gen == 0) p.next_gen = 1;
    a.dev = st.st_dev;
    a.ino = st.st_ino;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (static_cast<uint64_t>(fd) << 32) | a.gen;
    if (epoll_ctl(p.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
      if (errno != EEXIST) return -1;
      if (epoll_ctl(p.epfd, EPOLL_CTL_MOD, fd, &ev) < 0) return -1;
    }
    it = p.fds.emplace(fd, a).first;
  }
  it->second.events = events;
  it->second.user = user;
  // The condition is checked at once: an fd that is already ready sends its event now.
  enqueue(p, fd, it->second);
  signal(p);
  return 0;
}

int port_dissociate(int port, int source, uintptr_t object) noexcept {
  std::shared_ptr<Port> pp = find_port(port);
  if (!pp) return fail(EBADF);
  if (source != PORT_SOURCE_FD) return fail(EINVAL);
  Port& p = *pp;
  std::lock_guard<std::mutex> g(p.mu);
  const int fd = static_cast<int>(object);
  auto it = p.fds.find(fd);
  if (it == p.fds.end()) return fail(ENOENT);
  if (same_file(it->second, fd)) epoll_ctl(p.epfd, EPOLL_CTL_DEL, fd, nullptr);
  p.fds.erase(it);
  return 0;
}

int port_send(int port, int events, void* user) noexcept {
  std::shared_ptr<Port> pp = find_port(port);
  if (!pp) return fail(EBADF);
  Port& p = *pp;
  std::lock_guard<std::mutex> g(p.mu);
  p.user_events.push_back(port_event_t{events, PORT_SOURCE_USER, 0, 0, user});
  signal(p);
  return 0;
}

int port_alert(int port, int flags, int events, void* user) noexcept {
  std::shared_ptr<Port> pp = find_port(port);
  if (!pp) return fail(EBADF);
  if ((flags & PORT_ALERT_SET) && (flags & PORT_ALERT_UPDATE)) return fail(EINVAL);
  Port& p = *pp;
  std::lock_guard<std::mutex> g(p.mu);
  if (events == 0) {
    p.alert = false;
    return 0;
  }
  if ((flags & PORT_ALERT_UPDATE) && p.alert) return fail(EBUSY);
  p.alert = true;
  p.alert_events = events;
  p.alert_user = user;
  signal(p);
  return 0;
}

int port_getn(int port, port_event_t list[], unsigned max, unsigned* nget,
              const timespec* timeout) noexcept {
  std::shared_ptr<Port> pp = find_port(port);
  if (!pp) return fail(EBADF);
  if (!nget) return fail(EFAULT);
  if (*nget > max) return fail(EINVAL);
  if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= kNsPerSec)) {
    return fail(EINVAL);
  }
  Port& p = *pp;
  std::unique_lock<std::mutex> lk(p.mu);
  if (max == 0) {
    harvest(p);
    *nget = pending(p);
    return 0;
  }
  const unsigned want = *nget;
  unsigned got = 0;
  const int64_t deadline = timeout ? now_ns() + timeout->tv_sec * kNsPerSec + timeout->tv_nsec : -1;
  for (;;) {
    harvest(p);
    if (p.alert) {
      if (got == 0) {
        list[0] = port_event_t{p.alert_events, PORT_SOURCE_ALERT, 0, 0, p.alert_user};
        got = 1;
      }
      *nget = got;
      return 0;
    }
    got += collect(p, list + got, max - got);
    if (got >= want) {  // *nget == 0 asks for nothing: whatever is there, at once
      *nget = got;
      return 0;
    }
    timespec rem{};
    if (timeout) {
      const int64_t left = deadline - now_ns();
      if (left <= 0) {
        *nget = got;  // the events retrieved so far are in list: ETIME is not "none"
        return fail(ETIME);
      }
      rem.tv_sec = left / kNsPerSec;
      rem.tv_nsec = left % kNsPerSec;
    }
    lk.unlock();
    pollfd q{p.epfd, POLLIN, 0};
    const int r = ppoll(&q, 1, timeout ? &rem : nullptr, nullptr);
    const int e = errno;
    lk.lock();
    if (r < 0) {
      *nget = got;
      return fail(e);
    }
  }
}

}  // namespace ringpoll::portemu
