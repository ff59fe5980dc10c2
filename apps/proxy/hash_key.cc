#include "apps/proxy/hash_key.h"

#include "apps/proxy/http_message.h"

namespace ringpoll::proxy {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool cookie_value(std::string_view field, std::string_view name, std::string_view* out) {
  while (!field.empty()) {
    const size_t semi = field.find(';');
    const std::string_view pair = field.substr(0, semi);
    field = semi == std::string_view::npos ? std::string_view() : field.substr(semi + 1);
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;
    std::string_view v = trim(pair.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    *out = v;
    return true;
  }
  return false;
}

bool hash_key_value(std::string_view head, const HashKey& k, std::string* out) {
  out->clear();
  bool found = false;
  if (k.source == HashSource::kHeader) {
    for_each_field(head, [&](std::string_view n, std::string_view v) {
      if (!iequals(n, k.name) || v.empty()) return;
      if (found) *out += ", ";
      out->append(v);
      found = true;
    });
  } else if (k.source == HashSource::kCookie) {
    for_each_field(head, [&](std::string_view n, std::string_view v) {
      std::string_view c;
      if (found || !iequals(n, "cookie") || !cookie_value(v, k.name, &c) || c.empty()) return;
      out->assign(c);
      found = true;
    });
  }
  return found;
}

}  // namespace ringpoll::proxy
