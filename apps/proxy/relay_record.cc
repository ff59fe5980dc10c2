#include "apps/proxy/relay_record.h"

#include <charconv>
#include <cstring>

namespace ringpoll::proxy {

namespace {

bool carriable(const std::string& s) {
  return s.find('\n') == std::string::npos;
}

// Cuts the next line (without its '\n') off *rest; false when there is none.
bool next_line(std::string_view* rest, std::string_view* line) {
  const size_t nl = rest->find('\n');
  if (nl == std::string_view::npos) return false;
  *line = rest->substr(0, nl);
  rest->remove_prefix(nl + 1);
  return true;
}

template <class T>
bool parse_number(std::string_view s, T* out) {
  if (s.empty()) return false;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// "key value..." → the value after "key " ; false when the key is another.
bool keyed(std::string_view line, std::string_view key, std::string_view* value) {
  if (line.size() < key.size() + 1 || line.substr(0, key.size()) != key || line[key.size()] != ' ')
    return false;
  *value = line.substr(key.size() + 1);
  return true;
}

// "a b" → two numbers.
template <class A, class B>
bool two_numbers(std::string_view v, A* a, B* b) {
  const size_t sp = v.find(' ');
  return sp != std::string_view::npos && parse_number(v.substr(0, sp), a) &&
         parse_number(v.substr(sp + 1), b);
}

// A record's lines in turn: each failure names the line it is on ("line 3: ...").
struct Lines {
  std::string_view rest, line;
  int n = 0;
  std::string* why;
  bool take() {
    ++n;
    return next_line(&rest, &line);
  }
  bool bad(const std::string& what) {
    *why = "connection record, line " + std::to_string(n) + ": " + what;
    return false;
  }
  // The header line: `kind` ("not `what` record" otherwise) and this binary's version.
  bool header(std::string_view kind, const char* what, int want) {
    std::string_view v;
    int version = 0;
    if (!take()) return bad("no header line");
    if (!keyed(line, kind, &v) || !parse_number(v, &version))
      return bad(std::string("not ") + what + " record: '" + std::string(line.substr(0, 40)) + "'");
    if (version != want)
      return bad("version " + std::to_string(version) + ", this binary reads " +
                 std::to_string(want));
    return true;
  }
  // "key <value>" as the next line.
  bool keyed_line(const char* key, std::string_view* v) {
    if (!take()) return bad(std::string("missing '") + key + "'");
    if (!keyed(line, key, v)) return bad(std::string("expected '") + key + " ...'");
    return true;
  }
};

const char* const kRelayHeader = "ringpoll-relay";
const char* const kHttpHeader = "ringpoll-http";

}  // namespace

std::string encode_relay_record(const RelayRecord& r, std::string* why) {
  for (const std::string* s : {&r.listener, &r.pool, &r.upstream}) {
    if (!carriable(*s)) {
      *why = "a name with a newline cannot be carried: '" + *s + "'";
      return "";
    }
  }
  std::string out = std::string(kRelayHeader) + " " + std::to_string(kRelayRecordVersion) + "\n";
  out += "listener " + r.listener + "\n";
  out += "pool " + r.pool + "\n";
  out += "upstream " + r.upstream + "\n";
  out += "idle " + std::to_string(r.idle_ns) + " " + std::to_string(r.idle_left_ns) + "\n";
  out += "up " + std::to_string(r.up.pending.size()) + " " + (r.up.ended ? "1" : "0") + "\n";
  out += "down " + std::to_string(r.down.pending.size()) + " " + (r.down.ended ? "1" : "0") + "\n";
  out += "\n";
  const size_t head = out.size();
  out.resize(head + r.up.pending.size() + r.down.pending.size());
  if (!r.up.pending.empty())
    std::memcpy(out.data() + head, r.up.pending.data(), r.up.pending.size());
  if (!r.down.pending.empty())
    std::memcpy(out.data() + head + r.up.pending.size(), r.down.pending.data(),
                r.down.pending.size());
  return out;
}

bool decode_relay_record(std::string_view text, RelayRecord* out, std::string* why) {
  RelayRecord r;
  Lines l{text, {}, 0, why};
  std::string_view& rest = l.rest;
  std::string_view& line = l.line;
  std::string_view v;
  const auto bad = [&](const std::string& what) { return l.bad(what); };
  const auto take = [&] { return l.take(); };
  if (!l.header(kRelayHeader, "a relay", kRelayRecordVersion)) return false;
  std::string* names[] = {&r.listener, &r.pool, &r.upstream};
  const char* keys[] = {"listener", "pool", "upstream"};
  for (size_t i = 0; i < 3; ++i) {
    if (!l.keyed_line(keys[i], &v)) return false;
    names[i]->assign(v);
    if (i == 0 && r.listener.empty()) return bad("an empty listener name");
  }
  if (!l.keyed_line("idle", &v)) return false;
  if (!two_numbers(v, &r.idle_ns, &r.idle_left_ns) || r.idle_ns < 0 || r.idle_left_ns < 0 ||
      r.idle_left_ns > r.idle_ns)
    return bad("expected 'idle <idle_ns> <left_ns>' with 0 <= left <= idle");
  size_t sizes[2] = {0, 0};
  RelayRecord::Direction* dirs[] = {&r.up, &r.down};
  const char* dkeys[] = {"up", "down"};
  for (size_t i = 0; i < 2; ++i) {
    int ended = -1;
    if (!take()) return bad(std::string("missing '") + dkeys[i] + "'");
    if (!keyed(line, dkeys[i], &v) || !two_numbers(v, &sizes[i], &ended) ||
        (ended != 0 && ended != 1))
      return bad(std::string("expected '") + dkeys[i] + " <bytes> <0|1>'");
    dirs[i]->ended = ended == 1;
  }
  if (!take() || !line.empty()) return bad("expected the empty line before the bytes");
  if (sizes[0] > rest.size() || sizes[1] != rest.size() - sizes[0])
    return bad("the record says " + std::to_string(sizes[0]) + " + " + std::to_string(sizes[1]) +
               " buffered bytes and carries " + std::to_string(rest.size()));
  const auto* b = reinterpret_cast<const std::byte*>(rest.data());
  r.up.pending.assign(b, b + sizes[0]);
  r.down.pending.assign(b + sizes[0], b + rest.size());
  *out = std::move(r);
  return true;
}

}  // namespace ringpoll::proxy

namespace ringpoll::proxy {

bool is_http_record(std::string_view text) {
  return text.starts_with(std::string(kHttpHeader) + " ");
}

std::string encode_http_record(const HttpClientRecord& r, std::string* why) {
  if (!carriable(r.listener)) {
    *why = "a name with a newline cannot be carried: '" + r.listener + "'";
    return "";
  }
  std::string out = std::string(kHttpHeader) + " " + std::to_string(kHttpRecordVersion) + "\n";
  out += "listener " + r.listener + "\n";
  out += "deadline " +
         (r.deadline_left_ns < 0 ? std::string("none") : std::to_string(r.deadline_left_ns)) + "\n";
  out += "bytes " + std::to_string(r.bytes.size()) + "\n\n";
  const size_t head = out.size();
  out.resize(head + r.bytes.size());
  if (!r.bytes.empty()) std::memcpy(out.data() + head, r.bytes.data(), r.bytes.size());
  return out;
}

bool decode_http_record(std::string_view text, HttpClientRecord* out, std::string* why) {
  HttpClientRecord r;
  Lines l{text, {}, 0, why};
  std::string_view v;
  if (!l.header(kHttpHeader, "an HTTP client", kHttpRecordVersion) || !l.keyed_line("listener", &v))
    return false;
  r.listener.assign(v);
  if (r.listener.empty()) return l.bad("an empty listener name");
  if (!l.keyed_line("deadline", &v)) return false;
  if (v != "none" && (!parse_number(v, &r.deadline_left_ns) || r.deadline_left_ns < 0))
    return l.bad("expected 'deadline <left_ns>' (0 or more) or 'deadline none'");
  size_t n = 0;
  if (!l.keyed_line("bytes", &v)) return false;
  if (!parse_number(v, &n)) return l.bad("expected 'bytes <count>'");
  if (!l.take() || !l.line.empty()) return l.bad("expected the empty line before the bytes");
  if (n != l.rest.size())
    return l.bad("the record says " + std::to_string(n) + " buffered bytes and carries " +
                 std::to_string(l.rest.size()));
  const auto* b = reinterpret_cast<const std::byte*>(l.rest.data());
  r.bytes.assign(b, b + n);
  *out = std::move(r);
  return true;
}

}  // namespace ringpoll::proxy
