// The sharded engine: cross-shard submit_to round trip (target idle, and target busy
// polling), and memory per idle connection owned by the engine.
#include <benchmark/benchmark.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/server.h"
#include "epoll/epoll_poller.h"
#include "uring/uring_completion.h"
#include "uring/uring_poller.h"

namespace ringpoll {
namespace {

// n round trips to `target`; *ns gets the total, and each one's time is appended to
// *samples (reserved by the caller, so recording allocates nothing).
template <class P>
Task<void> round_trips(typename Engine<P>::Shard* target, int n, int64_t* ns,
                       std::vector<int64_t>* samples) {
  const int64_t t0 = mono_now_ns();
  int64_t last = t0;
  for (int i = 0; i < n; ++i) {
    co_await Engine<P>::submit_to(*target, [] { return 1; });
    const int64_t now = mono_now_ns();
    samples->push_back(now - last);
    last = now;
  }
  *ns = last - t0;
}

double percentile_us(std::vector<int64_t>& v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) / 1e3;
}

template <class P>
Task<void> spin(std::atomic<bool>* stop) {
  while (!stop->load(std::memory_order_relaxed)) co_await Engine<P>::current()->sched().yield();
}

template <class P>
void BM_SubmitToRoundTrip(benchmark::State& st) {
  if (!P::available().ok) {
    st.SkipWithError("backend unavailable");
    return;
  }
  // 0: the target sleeps between calls (each call wakes it); 1: a task on the target keeps
  // it running (yield loop); 2: the target busy-polls before blocking
  // (SchedulerOptions::busy_poll_ns, the config's engine.busy_poll_us).
  const bool busy = st.range(0) == 1;
  EngineOptions o;
  o.shards = 2;
  if (st.range(0) == 2) o.sched.busy_poll_ns = 50'000'000;
  Engine<P> e(o);
  if (!e.start().ok()) {
    st.SkipWithError("engine start failed");
    return;
  }
  std::atomic<bool> stop{false};
  if (busy) {  // the target never sleeps: no wake needed, the reply is picked up by polling
    Engine<P>::post(e.shard(1), [&] { Engine<P>::current()->sched().spawn(spin<P>(&stop)); });
  }
  constexpr int kBatch = 2000;
  std::vector<int64_t> samples;
  samples.reserve(static_cast<size_t>(kBatch) * 20);
  for (auto _ : st) {
    int64_t ns = 0;
    Engine<P>::run_task(e.shard(0),
                        [&] { return round_trips<P>(&e.shard(1), kBatch, &ns, &samples); });
    st.SetIterationTime(static_cast<double>(ns) / 1e9);
  }
  st.SetItemsProcessed(st.iterations() * kBatch);
  // Per call, over every call of the run (the reported time is the mean).
  st.counters["p50_us"] = percentile_us(samples, 0.50);
  st.counters["p99_us"] = percentile_us(samples, 0.99);
  stop.store(true);
  e.stop();
  e.join();
}
BENCHMARK(BM_SubmitToRoundTrip<EpollPoller>)
    ->Name("BM_SubmitTo_epoll")
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->UseManualTime()
    ->Iterations(20);
BENCHMARK(BM_SubmitToRoundTrip<UringPoller>)
    ->Name("BM_SubmitTo_io_uring")
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->UseManualTime()
    ->Iterations(20);

long rss_bytes() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, rss = 0;
  f >> pages >> rss;
  return rss * sysconf(_SC_PAGESIZE);
}

template <PollerBackend P>
Task<void> idle_handler(TcpStream<P>& c) {
  std::array<std::byte, 16> b;  // small: the benchmark counts the engine's memory, not buffers
  (void)co_await c.read(b);
}

// RSS delta of the server process for 10,000 idle connections (the clients live in a
// child process). Counts PollDescs, connection records and coroutine frames; not socket
// buffers or the kernel's own memory. Reported:
//   bytes_per_conn   RSS delta / connections: everything the process pays;
//   frame_per_conn   the handler coroutine's frame (the application's), measured with the
//                    frame counter of engine/task.h on the shard thread;
//   op_bytes         the engine's read operation, which waits inside that frame;
//   engine_per_conn  bytes_per_conn - frame_per_conn + op_bytes: what the engine owns
//                    (PollDesc, connection record, the waiting operation, allocator
//                    rounding), the figure issue 4 bounds at 256 B.
// What one measurement reports (written by the measuring child process).
struct IdleMemory {
  double conns = 0, rss = 0, frame = 0;
};

// Runs in a fresh child process, so every repetition starts cold: PollCache blocks are
// never freed (type stability) and a second round in the same process would reuse them
// and count nothing. The clients live in a grandchild.
template <PollerBackend P>
IdleMemory measure_idle_memory(int conns_wanted) {
  IdleMemory m;
  EngineOptions o;
  o.shards = 1;
  Engine<P> e(o);
  if (!e.start().ok()) return m;
  TcpServer<P> srv(e);
  SocketAddress at;
  parse_address("127.0.0.1:0", &at);
  if (!srv.start(at, idle_handler<P>).ok()) return m;
  auto frames = [&e] { return Engine<P>::call(e.shard(0), [] { return detail::t_frame_bytes; }); };
  const int64_t frames_before = frames();
  const long before = rss_bytes();
  int go[2];
  if (pipe(go) != 0) return m;
  const pid_t pid = fork();
  if (pid == 0) {
    // Dies with the measuring process, so a crash there cannot leave this one holding the
    // result pipe open (the benchmark would wait for it forever).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(3);
    std::vector<int> fds;
    const SocketAddress a = srv.address();
    for (int i = 0; i < conns_wanted; ++i) {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (::connect(fd, a.sa(), a.len) < 0) _exit(1);
      fds.push_back(fd);
    }
    char b;
    if (::read(go[0], &b, 1) != 1) _exit(2);
    _exit(0);
  }
  for (int i = 0; i < 10000 && srv.live() < static_cast<size_t>(conns_wanted); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const long after = rss_bytes();
  m.conns = static_cast<double>(srv.live());
  if (m.conns > 0) {
    m.rss = static_cast<double>(after - before) / m.conns;
    m.frame = static_cast<double>(frames() - frames_before) / m.conns;
  }
  if (::write(go[1], "x", 1) != 1) m.conns = 0;
  waitpid(pid, nullptr, 0);
  srv.shutdown(1'000'000'000);
  e.stop();
  e.join();
  return m;
}

// The waiting read of each backend kind: an FdOp on readiness backends; on io_uring in
// completion mode the frame-less read of the multishot recv's queue in its wrapper.
template <PollerBackend P>
constexpr double read_op_bytes() {
  if constexpr (P::kCompletion) {
    return sizeof(FastOrTask<FdOp<P, fdop::RingRead<P>>, IoResult>);
  } else {
    return sizeof(FdOp<P, fdop::Read>);
  }
}

// Per backend: epoll (the figure issue 4 bounds) and io_uring completion mode, whose
// connections also keep the multishot recv's queue (FdState) in the connection record's
// stream; the provided-buffer ring is per shard and the kernel's side is not in RSS.
template <PollerBackend P>
void BM_MemoryPerIdleConnection(benchmark::State& st) {
  constexpr int kConns = 10000;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rlimit want{rl.rlim_max, rl.rlim_max};
  setrlimit(RLIMIT_NOFILE, &want);
  for (auto _ : st) {
    int res[2];
    if (pipe(res) != 0) break;
    const pid_t pid = fork();
    if (pid == 0) {
      const IdleMemory m = measure_idle_memory<P>(kConns);
      _exit(::write(res[1], &m, sizeof m) == sizeof m ? 0 : 1);
    }
    IdleMemory m;
    const bool got = ::read(res[0], &m, sizeof m) == sizeof m;
    waitpid(pid, nullptr, 0);
    ::close(res[0]);
    ::close(res[1]);
    if (!got || m.conns < kConns) {
      st.SkipWithError("the measuring process did not get its 10,000 connections");
      break;
    }
    constexpr double op = read_op_bytes<P>();
    st.counters["connections"] = m.conns;
    st.counters["bytes_per_conn"] = m.rss;
    st.counters["frame_per_conn"] = m.frame;
    st.counters["op_bytes"] = op;
    st.counters["engine_per_conn"] = m.rss - m.frame + op;
  }
  setrlimit(RLIMIT_NOFILE, &rl);
}
BENCHMARK(BM_MemoryPerIdleConnection<EpollPoller>)
    ->Name("BM_MemoryPerIdleConnection/epoll")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MemoryPerIdleConnection<UringCompletionPoller>)
    ->Name("BM_MemoryPerIdleConnection/io_uring-completion")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace ringpoll
