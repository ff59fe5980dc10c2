#pragma once
// Host names and host-name patterns (plain functions, no engine state): what a TLS server
// name (RFC 6066 §3) may be, and the patterns routes match them with. ringpoll-proxy's SNI
// routes (apps/proxy/client_hello.h) and the configuration reader (tuning/) share them.
#include <cstdint>
#include <string>
#include <string_view>

namespace ringpoll {

namespace host_detail {
inline char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}
inline bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}
inline bool same_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}
}  // namespace host_detail

// A DNS host name as TLS carries it: labels of letters, digits, '-' (and '_', which real
// names carry) separated by single dots, no trailing dot; 1..255 bytes, labels 1..63.
// On false, *why says what is wrong and at which byte.
inline bool valid_host_name(std::string_view h, std::string* why) {
  if (h.empty() || h.size() > 255) {
    *why = "host name of " + std::to_string(h.size()) + " bytes (1..255)";
    return false;
  }
  size_t label = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    const char c = h[i];
    if (c == '.') {
      if (label == 0) {
        *why = "host name has an empty label";
        return false;
      }
      label = 0;
      continue;
    }
    if (!host_detail::name_char(c)) {
      *why = "host name byte " + std::to_string(i) + " is " +
             std::to_string(static_cast<unsigned char>(c)) +
             " (letters, digits, '-', '_' and '.' only)";
      return false;
    }
    if (++label > 63) {
      *why = "host name has a label over 63 bytes";
      return false;
    }
  }
  if (label == 0) {
    *why = "host name ends with a dot";
    return false;
  }
  return true;
}

// A service given by name (ringpoll-proxy's pool upstreams): "host:port" (a host name and a
// port 1..65535) or an SRV name "_service._proto.zone" (no port: *port = 0). False with
// *why saying what is wrong.
inline bool parse_service_name(std::string_view text, std::string* host, uint16_t* port,
                               std::string* why) {
  const std::string t(text);
  if (text.starts_with('_')) {
    const size_t dot = text.find('.');
    if (text.find(':') != std::string_view::npos) {
      *why = "an SRV name (\"" + t + "\") takes no port: its records give them";
      return false;
    }
    if (dot == std::string_view::npos || text.substr(dot + 1, 1) != "_" ||
        text.find('.', dot + 1) == std::string_view::npos) {
      *why = "an SRV name is \"_service._proto.zone\", got \"" + t + "\"";
      return false;
    }
    if (!valid_host_name(text, why)) return false;
    *host = t;
    *port = 0;
    return true;
  }
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == text.size()) {
    *why = "missing ':port' in \"" + t + "\" (or an SRV name \"_service._proto.zone\")";
    return false;
  }
  const std::string_view h = text.substr(0, colon), ps = text.substr(colon + 1);
  uint32_t p = 0;
  for (char c : ps) {
    p = (c >= '0' && c <= '9' && p <= 65535) ? p * 10 + static_cast<uint32_t>(c - '0') : 70000;
  }
  if (p == 0 || p > 65535) {
    *why = "port \"" + std::string(ps) + "\" in \"" + t + "\" is not 1..65535";
    return false;
  }
  if (!valid_host_name(h, why)) {
    *why = "\"" + t + "\" is neither an address nor \"name:port\": " + *why;
    return false;
  }
  const std::string_view last = h.substr(h.rfind('.') + 1);
  if (last.find_first_not_of("0123456789") == std::string_view::npos) {
    *why = "\"" + t + "\" is not an address (a name's last label is not all digits)";
    return false;
  }
  *host = std::string(h);
  *port = static_cast<uint16_t>(p);
  return true;
}

// A host-name pattern: a host name ("api.example.com"), a wildcard ("*.example.com": any
// name of one or more labels under example.com, not example.com itself), or "*" (any name,
// and no name at all). Matching ignores case.
inline bool valid_host_pattern(std::string_view p, std::string* why) {
  if (p == "*") return true;
  std::string_view host = p;
  if (p.size() >= 2 && p[0] == '*' && p[1] == '.') host = p.substr(2);
  if (host.find('*') != std::string_view::npos) {
    *why = "'*' only as a whole first label (\"*.example.com\") or alone (\"*\")";
    return false;
  }
  return valid_host_name(host, why);
}

inline bool host_pattern_matches(std::string_view pattern, std::string_view name) {
  if (pattern == "*") return true;
  if (name.empty()) return false;
  if (pattern.size() >= 2 && pattern[0] == '*' && pattern[1] == '.') {
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    return name.size() > suffix.size() &&
           host_detail::same_ignoring_case(name.substr(name.size() - suffix.size()), suffix) &&
           name[name.size() - suffix.size() - 1] != '.';
  }
  return host_detail::same_ignoring_case(pattern, name);
}

}  // namespace ringpoll
