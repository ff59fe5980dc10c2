// The AIX pollset emulation (FOR TESTING ONLY); what it reproduces is in the header.
//
// Structure: a pollset is a level-triggered epoll instance; each fd in the set has one
// registration whose user data is (fd, generation), so a reply from a registration that an
// unseen close(2) orphaned can be recognised and ignored. The fd -> entry table holds the
// AIX event bits, which PS_MOD can only grow.
#include "aix/emulation/pollset_emulation.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ringpoll::psemu {
namespace {

struct Entry {
  short events = 0;  // AIX bits
  uint32_t gen = 0;
  dev_t dev = 0;
  ino_t ino = 0;
};

struct Pollset {
  std::mutex mu;
  int epfd = -1;
  uint32_t next_gen = 1;
  std::unordered_map<int, Entry> fds;
};

std::mutex g_mu;
std::unordered_map<int, std::shared_ptr<Pollset>>& registry() {
  static auto* r = new std::unordered_map<int, std::shared_ptr<Pollset>>;
  return *r;
}

std::shared_ptr<Pollset> find_ps(pollset_t ps) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = registry().find(ps);
  return it == registry().end() ? nullptr : it->second;
}

int fail(int e) {
  errno = e;
  return -1;
}

uint32_t to_epoll(short aix) {
  uint32_t e = 0;
  if (aix & kPollIn) e |= EPOLLIN | EPOLLRDHUP;
  if (aix & kPollOut) e |= EPOLLOUT;
  if (aix & kPollPri) e |= EPOLLPRI;
  return e;  // EPOLLHUP and EPOLLERR are always reported
}

short to_aix(uint32_t ep, short asked) {
  short r = 0;
  if ((ep & (EPOLLIN | EPOLLRDHUP)) && (asked & kPollIn)) r |= kPollIn;
  if ((ep & EPOLLOUT) && (asked & kPollOut)) r |= kPollOut;
  if ((ep & EPOLLPRI) && (asked & kPollPri)) r |= kPollPri;
  if (ep & EPOLLHUP) r |= kPollHup;
  if (ep & EPOLLERR) r |= kPollErr;
  return r;
}

// The entry for fd when it is really in the set: an entry whose file was closed (and the
// number maybe reused) is dropped, as AIX drops a closed fd.
Entry* live_entry(Pollset& p, int fd) {
  auto it = p.fds.find(fd);
  if (it == p.fds.end()) return nullptr;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_dev == it->second.dev && st.st_ino == it->second.ino) {
    return &it->second;
  }
  p.fds.erase(it);
  return nullptr;
}

int register_fd(Pollset& p, int fd, short events, bool modify) {
  Entry* e = live_entry(p, fd);
  epoll_event ev{};
  if (e) {
    if (!modify) return EINVAL;
    e->events = static_cast<short>(e->events | events);
    ev.events = to_epoll(e->events);
    ev.data.u64 = (static_cast<uint64_t>(fd) << 32) | e->gen;
    return epoll_ctl(p.epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? errno : 0;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) return EBADF;
  Entry n;
  n.events = events;
  n.gen = p.next_gen++;
  if (p.next_gen == 0) p.next_gen = 1;
  n.dev = st.st_dev;
  n.ino = st.st_ino;
  ev.events = to_epoll(events);
  ev.data.u64 = (static_cast<uint64_t>(fd) << 32) | n.gen;
  if (epoll_ctl(p.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    if (errno != EEXIST) return errno;
    // A registration of this very file outlived an unseen close: take it over.
    if (epoll_ctl(p.epfd, EPOLL_CTL_MOD, fd, &ev) < 0) return errno;
  }
  p.fds[fd] = n;
  return 0;
}

}  // namespace

pollset_t pollset_create(int maxfd) noexcept {
  if (maxfd < -1 || maxfd == 0) return fail(EINVAL);
  auto p = std::make_shared<Pollset>();
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->epfd < 0) return -1;
  const int fd = p->epfd;
  std::lock_guard<std::mutex> g(g_mu);
  registry()[fd] = std::move(p);
  return fd;
}

int pollset_destroy(pollset_t ps) noexcept {
  std::shared_ptr<Pollset> p;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = registry().find(ps);
    if (it == registry().end()) return fail(EINVAL);
    p = std::move(it->second);
    registry().erase(it);
  }
  return ::close(p->epfd);
}

int pollset_ctl(pollset_t ps, poll_ctl* array, int length) noexcept {
  std::shared_ptr<Pollset> pp = find_ps(ps);
  if (!pp) return fail(EINVAL);
  if (length < 0 || (length > 0 && !array)) return fail(EINVAL);
  Pollset& p = *pp;
  std::lock_guard<std::mutex> g(p.mu);
  for (int i = 0; i < length; ++i) {
    const poll_ctl& c = array[i];
    int err = 0;
    switch (c.cmd) {
      case PS_ADD:
        err = register_fd(p, c.fd, c.events, false);
        break;
      case PS_MOD:
        err = register_fd(p, c.fd, c.events, true);
        break;
      case PS_DELETE:
        if (!live_entry(p, c.fd)) {
          err = EINVAL;
        } else {
          epoll_ctl(p.epfd, EPOLL_CTL_DEL, c.fd, nullptr);
          p.fds.erase(c.fd);
        }
        break;
      default:
        err = EINVAL;
    }
    if (err != 0) return fail(err);
  }
  return 0;
}

int pollset_query(pollset_t ps, pollfd* q) noexcept {
  std::shared_ptr<Pollset> pp = find_ps(ps);
  if (!pp || !q) return fail(EINVAL);
  std::lock_guard<std::mutex> g(pp->mu);
  Entry* e = live_entry(*pp, q->fd);
  if (!e) return 0;
  q->events = e->events;
  return 1;
}

int pollset_poll(pollset_t ps, pollfd* out, int length, int timeout_ms) noexcept {
  std::shared_ptr<Pollset> pp = find_ps(ps);
  if (!pp) return fail(EINVAL);
  if (length <= 0 || !out) return fail(EINVAL);
  Pollset& p = *pp;
  std::vector<epoll_event> evs(static_cast<size_t>(length));
  // Level-triggered, so blocking in epoll itself loses nothing; the lock is taken only to
  // translate the replies.
  const int n = epoll_wait(p.epfd, evs.data(), length, timeout_ms < 0 ? -1 : timeout_ms);
  if (n < 0) return -1;
  std::lock_guard<std::mutex> g(p.mu);
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const int fd = static_cast<int>(evs[i].data.u64 >> 32);
    const auto gen = static_cast<uint32_t>(evs[i].data.u64);
    auto it = p.fds.find(fd);
    if (it == p.fds.end() || it->second.gen != gen) continue;  // orphaned by an unseen close
    Entry* e = live_entry(p, fd);
    if (!e) continue;
    const short rev = to_aix(evs[i].events, e->events);
    if (rev == 0) continue;
    out[m++] = pollfd{fd, e->events, rev};
  }
  return m;
}

}  // namespace ringpoll::psemu
