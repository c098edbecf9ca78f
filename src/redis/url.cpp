#include "url.hpp"

#include <charconv>

#include "dogpile/detail/backend_arguments.hpp"

namespace dogpile::redis_detail {
namespace {

[[noreturn]] void bad_url(const char* backend, std::string_view url, const std::string& why) {
  detail::bad_argument(backend, "url",
                       "'" + std::string(url) + "' " + why +
                           " (expected redis[s]://[[user]:password@]host[:port][/db] or "
                           "unix://[[user]:password@]/path[?db=N])");
}

int parse_int(const char* backend, std::string_view url, std::string_view s, const char* what,
              int lo, int hi) {
  int v = 0;
  const auto* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || v < lo || v > hi) {
    bad_url(backend, url, "has a bad " + std::string(what) + " '" + std::string(s) + "'");
  }
  return v;
}

std::string percent_decode(const char* backend, std::string_view url, std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) bad_url(backend, url, "has a bad %-escape");
      unsigned v = 0;
      const auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (ec != std::errc() || p != s.data() + i + 3) bad_url(backend, url, "has a bad %-escape");
      out.push_back(static_cast<char>(v));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

ParsedUrl parse_redis_url(const char* backend, std::string_view url) {
  ParsedUrl out;
  std::string_view rest;
  bool unix_socket = false;
  if (url.starts_with("redis://")) {
    rest = url.substr(8);
  } else if (url.starts_with("unix://")) {
    rest = url.substr(7);
    unix_socket = true;
  } else if (url.starts_with("rediss://")) {
    rest = url.substr(9);
    out.tls = true;
  } else {
    bad_url(backend, url, "has no redis://, rediss:// or unix:// scheme");
  }
  // Query: only db=N is understood; other parameters are ignored, as redis-py ignores unknown
  // ones it cannot map.
  std::string_view query;
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  // Credentials.
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    if (const auto colon = cred.find(':'); colon != std::string_view::npos) {
      out.username = percent_decode(backend, url, cred.substr(0, colon));
      out.password = percent_decode(backend, url, cred.substr(colon + 1));
    } else {
      out.username = percent_decode(backend, url, cred);  // redis-py: a lone user part
    }
  }
  if (unix_socket) {
    if (rest.empty() || rest.front() != '/') bad_url(backend, url, "has no absolute socket path");
    out.endpoint.unix_path = std::string(rest);
  } else {
    std::string_view hostport = rest;
    if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
      hostport = rest.substr(0, slash);
      const std::string_view db = rest.substr(slash + 1);
      if (!db.empty()) out.db = parse_int(backend, url, db, "database number", 0, 1 << 20);
    }
    if (hostport.empty()) bad_url(backend, url, "has no host");
    std::string_view host = hostport;
    if (hostport.front() == '[') {  // [ipv6]:port
      const auto close = hostport.find(']');
      if (close == std::string_view::npos) bad_url(backend, url, "has an unclosed '['");
      host = hostport.substr(1, close - 1);
      const std::string_view after = hostport.substr(close + 1);
      if (!after.empty()) {
        if (after.front() != ':') bad_url(backend, url, "has junk after ']'");
        out.endpoint.port = parse_int(backend, url, after.substr(1), "port", 1, 65535);
      }
    } else if (const auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
      host = hostport.substr(0, colon);
      out.endpoint.port = parse_int(backend, url, hostport.substr(colon + 1), "port", 1, 65535);
    }
    if (host.empty()) bad_url(backend, url, "has no host");
    out.endpoint.host = std::string(host);
  }
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view kv = query.substr(0, amp);
    if (kv.starts_with("db=")) {
      out.db = parse_int(backend, url, kv.substr(3), "database number", 0, 1 << 20);
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return out;
}

}  // namespace dogpile::redis_detail
