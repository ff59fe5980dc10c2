// http_responder: answers every HTTP/1.1 request with "Hello, World!", keeping the
// connection open (keep-alive) and answering pipelined requests in order. Each request
// header must be complete within 10 s of the previous answer (or of the connect), else
// the connection is closed (a read deadline: slow or idle clients do not hold it forever).
//
//   http_responder [ADDRESS]     default 127.0.0.1:8080
//
// Deliberately minimal: request bodies are not supported (a request must end with its
// header), which is enough for GET. apps/http/ has the strict parser ringpoll-serve uses.
#include <ringpoll/ringpoll.h>

#include "serve_until_stopped.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace ringpoll;

constexpr int64_t kHeaderTimeoutNs = 10'000'000'000;  // 10 s to send a request header
constexpr size_t kMaxHeaderBytes = 8192;              // larger headers: close

constexpr std::string_view kResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

template <class P>
Task<void> serve_http(TcpStream<P>& conn) {
  std::string in;  // bytes received and not yet answered
  std::string out;
  char buf[4096];
  for (;;) {
    // A new request (nothing buffered) gets 10 s for its whole header. The deadline is
    // absolute (CLOCK_MONOTONIC), so a client dribbling bytes cannot stretch it; a read
    // past it fails with kTimeout.
    if (in.empty()) (void)conn.set_read_deadline(mono_now_ns() + kHeaderTimeoutNs);
    const IoResult r = co_await conn.read(std::as_writable_bytes(std::span(buf)));
    if (!r.ok()) co_return;  // kEof, kTimeout or an I/O error: TcpServer closes the stream
    in.append(buf, r.n);
    // Answer every complete request in the buffer with one write (pipelining).
    out.clear();
    size_t end;
    while ((end = in.find("\r\n\r\n")) != std::string::npos) {
      out.append(kResponse);
      in.erase(0, end + 4);
    }
    if (in.size() > kMaxHeaderBytes) co_return;
    if (out.empty()) continue;
    const IoResult w = co_await conn.write(std::as_bytes(std::span(out)));
    if (!w.ok()) co_return;
  }
}

int main(int argc, char** argv) {
  SocketAddress at;
  std::string why;
  if (!parse_address(argc > 1 ? argv[1] : "127.0.0.1:8080", &at, &why).ok()) {
    std::fprintf(stderr, "http_responder: %s\n", why.c_str());
    return 2;
  }
  return examples::serve_until_stopped("http_responder", at, {}, []<class P>(Engine<P>&) {
    return typename TcpServer<P>::Handler(serve_http<P>);
  });
}
