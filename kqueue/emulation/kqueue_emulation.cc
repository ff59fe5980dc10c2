// The kqueue emulation (FOR TESTING ONLY); what it reproduces is listed in the header.
//
// Structure: a kqueue is an epoll instance. Every descriptor with a read or write knote has
// one edge-triggered epoll registration (EPOLLIN|EPOLLOUT|EPOLLRDHUP) that only says
// "something happened on this fd"; each wake-up queues the fd's knotes on the kqueue's
// active list, and kevent() evaluates each queued knote's filter with poll(2) as it hands
// it out. Level knotes go back on the active list after retrieval; EV_CLEAR knotes wait for
// the next wake-up. An eventfd in the same epoll set interrupts a blocked kevent() when
// another thread triggers EVFILT_USER or adds a knote.
#include "kqueue/emulation/kqueue_emulation.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace ringpoll::kqemu {
namespace {

constexpr uint64_t kSignalTag = 0;  // the eventfd; fd registrations carry gen >= 1
constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr int kHarvestBatch = 64;

using Key = std::pair<uintptr_t, int16_t>;  // (ident, filter): a knote's identity

struct Knote {
  uint16_t flags = 0;  // registration flags echoed back (EV_CLEAR, EV_ONESHOT, ...)
  uint32_t fflags = 0;
  int64_t data = 0;
  void* udata = nullptr;
  bool enabled = true;
  bool queued = false;     // on the active list, to be evaluated at the next scan
  bool triggered = false;  // EVFILT_USER only
};

// The epoll registration behind one descriptor's read/write knotes, with the identity of
// the file it was made for (a closed and reused fd number names another file).
struct FdWatch {
  uint32_t gen = 0;
  dev_t dev = 0;
  ino_t ino = 0;
};

struct Kq {
  std::mutex mu;
  int epfd = -1;
  int sigfd = -1;
  uint32_t next_gen = 1;
  std::map<Key, Knote> knotes;
  std::unordered_map<int, FdWatch> watches;
  std::deque<Key> active;
};

std::mutex g_mu;
std::unordered_map<int, std::shared_ptr<Kq>>& registry() {
  static auto* r = new std::unordered_map<int, std::shared_ptr<Kq>>;
  return *r;
}

std::shared_ptr<Kq> find_kq(int kq) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = registry().find(kq);
  return it == registry().end() ? nullptr : it->second;
}

bool is_fd_filter(int16_t f) {
  return f == EVFILT_READ || f == EVFILT_WRITE;
}

void signal(Kq& k) {
  const uint64_t one = 1;
  while (::write(k.sigfd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void enqueue(Kq& k, const Key& key, Knote& kn) {
  if (kn.queued) return;
  kn.queued = true;
  k.active.push_back(key);
}

// Drops every knote of fd and its epoll registration (when the fd still names that file).
void drop_fd(Kq& k, int fd, bool deregister) {
  k.knotes.erase(Key(static_cast<uintptr_t>(fd), EVFILT_READ));
  k.knotes.erase(Key(static_cast<uintptr_t>(fd), EVFILT_WRITE));
  k.watches.erase(fd);
  if (deregister) epoll_ctl(k.epfd, EPOLL_CTL_DEL, fd, nullptr);
}

// Does fd still name the file its watch was made for? (kqueue would have dropped the knotes
// at close(2); we find out here.)
bool same_file(const FdWatch& w, int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return false;
  return st.st_dev == w.dev && st.st_ino == w.ino;
}

int add_watch(Kq& k, int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return EBADF;
  auto it = k.watches.find(fd);
  if (it != k.watches.end()) {
    if (it->second.dev == st.st_dev && it->second.ino == st.st_ino) return 0;
    drop_fd(k, fd, false);  // the old file was closed behind our back
  }
  FdWatch w;
  w.gen = k.next_gen++;
  if (k.next_gen == 0) k.next_gen = 1;
  w.dev = st.st_dev;
  w.ino = st.st_ino;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = (static_cast<uint64_t>(fd) << 32) | w.gen;
  if (epoll_ctl(k.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    if (errno != EEXIST) return errno;
    // A registration of this very file survived a close we did not see: re-own it.
    if (epoll_ctl(k.epfd, EPOLL_CTL_MOD, fd, &ev) < 0) return errno;
  }
  k.watches[fd] = w;
  return 0;
}

void remove_knote(Kq& k, std::map<Key, Knote>::iterator it) {
  const Key key = it->first;
  k.knotes.erase(it);
  if (!is_fd_filter(key.second)) return;
  const int fd = static_cast<int>(key.first);
  const int16_t other = key.second == EVFILT_READ ? EVFILT_WRITE : EVFILT_READ;
  if (k.knotes.count(Key(key.first, other)) == 0) {
    auto w = k.watches.find(fd);
    if (w != k.watches.end()) {
      if (same_file(w->second, fd)) epoll_ctl(k.epfd, EPOLL_CTL_DEL, fd, nullptr);
      k.watches.erase(w);
    }
  }
}

// Applies one change; returns 0 or an errno. *activated: a knote was queued.
int apply(Kq& k, const struct kevent& c, bool* activated) {
  if (c.filter != EVFILT_READ && c.filter != EVFILT_WRITE && c.filter != EVFILT_USER) {
    return EINVAL;
  }
  const Key key(c.ident, c.filter);
  auto it = k.knotes.find(key);
  if (is_fd_filter(c.filter)) {
    const int fd = static_cast<int>(c.ident);
    if (c.ident > static_cast<uintptr_t>(INT32_MAX)) return EBADF;
    // A knote whose fd was closed (and maybe reused) is gone, as on a real kqueue.
    if (it != k.knotes.end()) {
      auto w = k.watches.find(fd);
      if (w == k.watches.end() || !same_file(w->second, fd)) {
        drop_fd(k, fd, false);
        it = k.knotes.end();
      }
    }
  }
  if (c.flags & EV_DELETE) {
    if (it == k.knotes.end()) return ENOENT;
    remove_knote(k, it);
    return 0;
  }
  if (it == k.knotes.end()) {
    if (!(c.flags & EV_ADD)) return ENOENT;
    if (is_fd_filter(c.filter)) {
      if (const int e = add_watch(k, static_cast<int>(c.ident)); e != 0) return e;
    }
    it = k.knotes.emplace(key, Knote{}).first;
  }
  Knote& kn = it->second;
  if (c.flags & EV_ADD) {
    kn.flags = c.flags & (EV_CLEAR | EV_ONESHOT | EV_DISPATCH | EV_RECEIPT);
    kn.udata = c.udata;
    kn.enabled = true;
    if (c.filter == EVFILT_USER) {
      kn.fflags = c.fflags & 0x00ffffff;
      kn.data = c.data;
    }
  }
  if (c.flags & EV_ENABLE) kn.enabled = true;
  if (c.flags & EV_DISABLE) kn.enabled = false;
  if (c.filter == EVFILT_USER && (c.fflags & NOTE_TRIGGER)) kn.triggered = true;
  // A filter is evaluated when its knote is attached or changed.
  enqueue(k, key, kn);
  *activated = true;
  return 0;
}

// Moves epoll's wake-ups onto the active list (never blocks).
void harvest(Kq& k) {
  epoll_event evs[kHarvestBatch];
  for (;;) {
    const int n = epoll_wait(k.epfd, evs, kHarvestBatch, 0);
    if (n <= 0) return;
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = evs[i].data.u64;
      if (tag == kSignalTag) {
        uint64_t buf;
        while (::read(k.sigfd, &buf, sizeof buf) < 0 && errno == EINTR) {
        }
        continue;
      }
      const int fd = static_cast<int>(tag >> 32);
      auto w = k.watches.find(fd);
      if (w == k.watches.end() || w->second.gen != static_cast<uint32_t>(tag)) continue;
      for (int16_t f : {EVFILT_READ, EVFILT_WRITE}) {
        const Key key(static_cast<uintptr_t>(fd), f);
        auto it = k.knotes.find(key);
        if (it != k.knotes.end()) enqueue(k, key, it->second);
      }
    }
    if (n < kHarvestBatch) return;
  }
}

// Evaluates queued knotes and hands out the ones whose condition holds.
int scan(Kq& k, struct kevent* out, int nevents) {
  int n = 0;
  size_t budget = k.active.size();  // re-queued level knotes wait for the next call
  while (budget-- > 0 && n < nevents) {
    const Key key = k.active.front();
    k.active.pop_front();
    auto it = k.knotes.find(key);
    if (it == k.knotes.end() || !it->second.queued) continue;
    Knote& kn = it->second;
    kn.queued = false;
    if (!kn.enabled) continue;
    struct kevent ev {};
    ev.ident = key.first;
    ev.filter = key.second;
    ev.flags = kn.flags;
    ev.udata = kn.udata;
    if (key.second == EVFILT_USER) {
      if (!kn.triggered) continue;
      ev.fflags = kn.fflags;
      ev.data = kn.data;
    } else {
      const int fd = static_cast<int>(key.first);
      auto w = k.watches.find(fd);
      pollfd p{fd, POLLIN | POLLOUT | POLLRDHUP, 0};
      if (w == k.watches.end() || ::poll(&p, 1, 0) < 0 || (p.revents & POLLNVAL) ||
          !same_file(w->second, fd)) {
        drop_fd(k, fd, false);  // closed behind our back: kqueue forgets it
        continue;
      }
      bool fire;
      bool eof;
      if (key.second == EVFILT_READ) {
        fire = p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR);
        eof = p.revents & (POLLRDHUP | POLLHUP);
        int avail = 0;
        if (fire && ioctl(fd, FIONREAD, &avail) == 0) ev.data = avail;
      } else {
        fire = p.revents & (POLLOUT | POLLHUP | POLLERR);
        eof = p.revents & POLLHUP;
      }
      if (!fire) continue;
      if (eof) ev.flags |= EV_EOF;
    }
    out[n++] = ev;
    if (kn.flags & EV_ONESHOT) {
      remove_knote(k, it);
    } else if (kn.flags & EV_DISPATCH) {
      kn.enabled = false;
    } else if (kn.flags & EV_CLEAR) {
      kn.triggered = false;  // fd knotes wait for the next wake-up
    } else {
      enqueue(k, key, kn);  // level: evaluated again at the next scan
    }
  }
  return n;
}

int64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * kNsPerSec + t.tv_nsec;
}

}  // namespace

int kqueue() noexcept {
  auto k = std::make_shared<Kq>();
  k->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (k->epfd < 0) return -1;
  k->sigfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (k->sigfd < 0) {
    const int e = errno;
    ::close(k->epfd);
    errno = e;
    return -1;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kSignalTag;
  if (epoll_ctl(k->epfd, EPOLL_CTL_ADD, k->sigfd, &ev) < 0) {
    const int e = errno;
    ::close(k->sigfd);
    ::close(k->epfd);
    errno = e;
    return -1;
  }
  const int fd = k->epfd;
  std::lock_guard<std::mutex> g(g_mu);
  registry()[fd] = std::move(k);
  return fd;
}

int close(int fd) noexcept {
  std::shared_ptr<Kq> k;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = registry().find(fd);
    if (it != registry().end()) {
      k = std::move(it->second);
      registry().erase(it);
    }
  }
  if (k) ::close(k->sigfd);
  return ::close(fd);
}

int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist,
           int nevents, const timespec* timeout) noexcept {
  if (nchanges < 0 || nevents < 0) {
    errno = EINVAL;
    return -1;
  }
  if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= kNsPerSec ||
                  timeout->tv_sec > kMaxTimeoutSec)) {
    errno = EINVAL;
    return -1;
  }
  std::shared_ptr<Kq> kp = find_kq(kq);
  if (!kp) {
    errno = EBADF;
    return -1;
  }
  Kq& k = *kp;
  std::unique_lock<std::mutex> lk(k.mu);
  int out = 0;
  bool activated = false;
  for (int i = 0; i < nchanges; ++i) {
    const struct kevent& c = changelist[i];
    const int err = apply(k, c, &activated);
    if (err == 0 && !(c.flags & EV_RECEIPT)) continue;
    if (out < nevents) {
      eventlist[out] = c;
      eventlist[out].flags = EV_ERROR;
      eventlist[out].data = err;
      ++out;
      continue;
    }
    if (err != 0) {
      if (activated) signal(k);
      errno = err;
      return -1;
    }
  }
  // Wake any other thread blocked in this kqueue so it evaluates what was just queued.
  if (activated) signal(k);
  if (out > 0 || nevents == 0) return out;

  const int64_t deadline = timeout ? now_ns() + timeout->tv_sec * kNsPerSec + timeout->tv_nsec : -1;
  for (;;) {
    harvest(k);
    out = scan(k, eventlist, nevents);
    if (out > 0) return out;
    timespec rem{};
    if (timeout) {
      const int64_t left = deadline - now_ns();
      if (left <= 0) return 0;
      rem.tv_sec = left / kNsPerSec;
      rem.tv_nsec = left % kNsPerSec;
    }
    lk.unlock();
    pollfd p{k.epfd, POLLIN, 0};
    const int r = ppoll(&p, 1, timeout ? &rem : nullptr, nullptr);
    const int e = errno;
    lk.lock();
    if (r < 0) {
      errno = e;
      return -1;  // EINTR: a signal interrupted the wait
    }
  }
}

}  // namespace ringpoll::kqemu
