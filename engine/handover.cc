#include "engine/handover.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
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
    // A deadline already past still looks once (a poll of 0 ms).
    const int64_t left_ms = std::max<int64_t>(0, (deadline - mono_now_ns()) / 1'000'000);
    pollfd p{sock, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left_ms));
    if (r > 0) return Status();
    if (r < 0 && errno != EINTR) return Status::from_errno(errno);
    if (r == 0 && left_ms == 0) return Errc::kTimeout;
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

namespace {
// A record's part in one message: kMaxMessage less the kind byte (and, in the first,
// the length).
constexpr size_t kRecordPart = kMaxMessage - 16;
}  // namespace

Status send_connection(int sock, std::string_view record, const std::vector<int>& fds,
                       std::string* why) {
  if (record.size() > kMaxHandedRecord) {
    if (why) *why = "a connection record of " + std::to_string(record.size()) + " bytes";
    return Status::from_errno(EMSGSIZE);
  }
  const size_t first = std::min(record.size(), kRecordPart);
  // Built piece by piece: g++ 12 warns (-Wrestrict, wrongly) on "C" + a temporary and on
  // assigning a literal to a string that held more.
  std::string msg(1, 'C');
  msg.append(std::to_string(record.size()));
  msg.push_back(':');
  msg.append(record.substr(0, first));
  if (Status st = send_message(sock, msg, fds); !st.ok())
    return fail(st.sys_errno(), "sending a connection", why);
  for (size_t at = first; at < record.size(); at += kRecordPart) {
    msg.assign(1, 'D');
    msg.append(record.substr(at, kRecordPart));
    if (Status st = send_message(sock, msg, {}); !st.ok())
      return fail(st.sys_errno(), "sending a connection's record", why);
  }
  return Status();
}

Status send_moves_end(int sock, const std::string& text) {
  std::string msg(1, 'E');
  msg.append(text);
  return send_message(sock, msg, {});
}

Status recv_connection(int sock, int timeout_ms, std::string* record, std::vector<int>* fds,
                       std::string* why) {
  record->clear();
  std::vector<int> got;
  const auto refuse = [&](Status st, const std::string& what) {
    for (int fd : got) ::close(fd);
    record->clear();
    if (why) *why = what;
    return st;
  };
  std::string text;
  Status st = recv_message(sock, mono_now_ns() + int64_t{timeout_ms} * 1'000'000, &text, &got);
  if (st.is(Errc::kTimeout))
    return refuse(st, "no connection within " + std::to_string(timeout_ms) + " ms");
  if (st.is(Errc::kEof)) return refuse(st, "the channel was closed");
  if (!st.ok()) return refuse(st, std::string("receiving a connection: ") + st.message());
  if (!text.empty() && text[0] == 'E' && got.empty()) {
    *record = text.substr(1);
    return Errc::kEof;
  }
  const size_t colon = text.find(':');
  size_t total = 0;
  bool sized =
      text.size() > 1 && text[0] == 'C' && colon != std::string::npos && colon > 1 && colon <= 9;
  for (size_t i = 1; sized && i < colon; ++i) {
    sized = text[i] >= '0' && text[i] <= '9';
    total = total * 10 + static_cast<size_t>(text[i] - '0');
  }
  if (!sized || total > kMaxHandedRecord || text.size() - colon - 1 > total)
    return refuse(Status::from_errno(EPROTO),
                  "a message that is not a connection record: '" + text.substr(0, 40) + "'");
  record->assign(text, colon + 1);
  while (record->size() < total) {
    std::vector<int> extra;
    st = recv_message(sock, mono_now_ns() + int64_t{kRecordPartMs} * 1'000'000, &text, &extra);
    got.insert(got.end(), extra.begin(), extra.end());
    if (!st.ok())
      return refuse(st.is(Errc::kEof) ? Status::from_errno(EPROTO) : st,
                    "a connection record cut short at " + std::to_string(record->size()) + " of " +
                        std::to_string(total) + " bytes: " + st.message());
    if (text.empty() || text[0] != 'D' || !extra.empty() ||
        text.size() - 1 > total - record->size())
      return refuse(Status::from_errno(EPROTO), "a connection record's part is malformed");
    record->append(text, 1);
  }
  *fds = std::move(got);
  return Status();
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
