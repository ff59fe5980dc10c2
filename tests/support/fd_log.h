#pragma once
// FdLog: everything a child writes to a pipe (its stderr, shared by every generation of an
// upgraded proxy), read all along on a thread of its own so the writer never blocks on a
// full pipe; text() is what came so far. The thread ends with the object (or stop()).
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>

namespace ringpoll::test {

class FdLog {
 public:
  explicit FdLog(int fd) : fd_(fd), t_([this] { run(); }) {}
  ~FdLog() { stop(); }
  FdLog(const FdLog&) = delete;
  FdLog& operator=(const FdLog&) = delete;
  std::string text() const {
    std::lock_guard<std::mutex> l(mu_);
    return text_;
  }
  void stop() {
    done_ = true;
    if (t_.joinable()) t_.join();
  }

 private:
  void run() {
    char buf[4096];
    while (!done_.load()) {
      pollfd pf{fd_, POLLIN, 0};
      if (::poll(&pf, 1, 50) <= 0) continue;
      const ssize_t k = ::read(fd_, buf, sizeof buf);
      if (k <= 0) break;
      std::lock_guard<std::mutex> l(mu_);
      text_.append(buf, static_cast<size_t>(k));
    }
  }
  int fd_;
  std::atomic<bool> done_{false};
  mutable std::mutex mu_;
  std::string text_;
  std::thread t_;  // last: started once the rest exists
};

}  // namespace ringpoll::test
