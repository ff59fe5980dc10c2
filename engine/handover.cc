#include "engine/handover.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/clock.h"

namespace ringpoll {

namespace {

constexpr size_t kMaxMessage = 4096;

Status fail(int e, const std::string& step, std::string* why) {
  if (why) *why = step + ": " + std::strerror(e);
  return Status::from_errno(e);
}

// Waits for sock to be readable until the absolute deadline (monotonic ns).
Status wait_readable(int sock, int64_t deadline) {
  for (;;) {
    const int64_t left_ms = (deadline - mono_now_ns()) / 1'000'000;
    if (left_ms <= 0) return Errc::kTimeout;
    pollfd p{sock, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left_ms));
    if (r > 0) return Status();
    if (r < 0 && errno != EINTR) return Status::from_errno(errno);
  }
}

// One message and the descriptors that came with it (close-on-exec).
Status recv_message(int sock, int64_t deadline, std::string* text, std::vector<int>* fds) {
  if (Status st = wait_readable(sock, deadline); !st.ok()) return st;
  char buf[kMaxMessage];
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxHandedFds)];
  iovec iov{buf, sizeof buf};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Status::from_errno(errno);
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds->push_back(fd);
    }
  }
  if (n == 0) return Errc::kEof;
  if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Status::from_errno(EMSGSIZE);
  text->assign(buf, static_cast<size_t>(n));
  return Status();
}

Status send_message(int sock, const std::string& text, const std::vector<int>& fds) {
  if (text.size() > kMaxMessage || fds.size() > kMaxHandedFds) return Status::from_errno(EMSGSIZE);
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kMaxHandedFds)];
  if (!fds.empty()) {
    m.msg_control = ctl;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &m, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? Status::from_errno(errno) : Status();
}

void close_all(std::vector<HandedListener>* ls) {
  for (HandedListener& l : *ls)
    for (int fd : l.fds) ::close(fd);
  ls->clear();
}

}  // namespace

Status send_listeners(int sock, const std::vector<HandedListener>& ls, std::string* why) {
  for (const HandedListener& l : ls) {
    if (l.fds.size() > kMaxHandedFds) {
      if (why) *why = "listener '" + l.name + "' has more sockets than one message carries";
      return Status::from_errno(EMSGSIZE);
    }
    if (Status st = send_message(sock, "L" + l.name, l.fds); !st.ok())
      return fail(st.sys_errno(), "sending listener '" + l.name + "'", why);
  }
  if (Status st = send_message(sock, "E", {}); !st.ok())
    return fail(st.sys_errno(), "sending the end of the listeners", why);
  return Status();
}

Status recv_listeners(int sock, int timeout_ms, std::vector<HandedListener>* out,
                      std::string* why) {
  const int64_t deadline = mono_now_ns() + int64_t{timeout_ms} * 1'000'000;
  std::vector<HandedListener> got;
  for (;;) {
    std::string text;
    std::vector<int> fds;
    const Status st = recv_message(sock, deadline, &text, &fds);
    if (!st.ok() || text.empty() || (text[0] != 'L' && text[0] != 'E') ||
        (text[0] == 'E' && !fds.empty())) {
      for (int fd : fds) ::close(fd);
      close_all(&got);
      if (why) {
        *why = st.is(Errc::kTimeout) ? "no listeners from the old process within " +
                                           std::to_string(timeout_ms) + " ms"
               : st.is(Errc::kEof) ? std::string("the old process closed the channel")
               : !st.ok()          ? std::string("receiving listeners: ") + st.message()
                                   : "a message that is not a listener: '" + text + "'";
      }
      return st.ok() ? Status::from_errno(EPROTO) : st;
    }
    if (text[0] == 'E') break;
    got.push_back({text.substr(1), std::move(fds)});
  }
  *out = std::move(got);
  return Status();
}

Status send_note(int sock, const std::string& text) {
  return send_message(sock, text, {});
}

Status recv_note(int sock, int timeout_ms, std::string* text) {
  std::vector<int> fds;
  const Status st = recv_message(sock, mono_now_ns() + int64_t{timeout_ms} * 1'000'000, text, &fds);
  for (int fd : fds) ::close(fd);  // a note carries none
  return st;
}

Status check_listening_tcp(int fd, std::string* why) {
  int v = 0, type = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0)
    return fail(errno, "descriptor " + std::to_string(fd) + " is not a socket", why);
  len = sizeof type;
  getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
  if (!v || type != SOCK_STREAM) {
    if (why) *why = "descriptor " + std::to_string(fd) + " is not a listening TCP socket";
    return Status::from_errno(ENOTSOCK);
  }
  return Status();
}

}  // namespace ringpoll
