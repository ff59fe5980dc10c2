// The ClientHello reader behind SNI routing (apps/proxy/client_hello.h): what it reads
// from well-formed hellos however they are cut, and what it refuses, with the reason.
#include "apps/proxy/client_hello.h"

#include <gtest/gtest.h>

#include <string>

#include "engine/host_name.h"
#include "support/tls_hello.h"

namespace ringpoll::proxy {
namespace {

using test::client_hello;
using test::HelloSpec;

HelloStatus read(const std::string& wire, ClientHello* out = nullptr, std::string* why = nullptr) {
  ClientHello h;
  std::string w;
  const HelloStatus s =
      read_client_hello(std::as_bytes(std::span(wire.data(), wire.size())), out ? out : &h, &w);
  if (why) *why = w;
  return s;
}

HelloSpec browser_like() {
  HelloSpec h;
  h.sni = "Api.Example.COM";
  h.alpn = {"h2", "http/1.1"};
  h.versions = {0x0304, 0x0303};
  h.extra = {{10, std::string("\x00\x02\x00\x1d", 4)}, {51, std::string(40, '\x01')}};
  return h;
}

TEST(ClientHello, ReadsServerNameAlpnAndVersions) {
  ClientHello h;
  const std::string wire = client_hello(browser_like());
  ASSERT_EQ(read(wire, &h), HelloStatus::kDone);
  EXPECT_EQ(h.server_name, "api.example.com");  // lower case
  EXPECT_EQ(h.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(h.versions, (std::vector<uint16_t>{0x0304, 0x0303}));
  EXPECT_EQ(h.legacy_version, 0x0303);
  EXPECT_EQ(h.wire_bytes, wire.size());
}

// However the bytes arrive — one record or one record per byte — every strict prefix asks
// for more and the whole hello is read the same.
TEST(ClientHello, EveryPrefixNeedsMoreWhateverTheRecordSize) {
  for (size_t frag : {size_t{16384}, size_t{100}, size_t{7}, size_t{1}}) {
    HelloSpec spec = browser_like();
    spec.fragment = frag;
    const std::string wire = client_hello(spec);
    for (size_t cut = 0; cut < wire.size(); ++cut) {
      std::string why;
      ASSERT_EQ(read(wire.substr(0, cut), nullptr, &why), HelloStatus::kNeedMore)
          << "fragment " << frag << ", cut at " << cut << " of " << wire.size() << ": " << why;
    }
    ClientHello h;
    ASSERT_EQ(read(wire, &h), HelloStatus::kDone) << "fragment " << frag;
    EXPECT_EQ(h.server_name, "api.example.com");
    EXPECT_EQ(h.wire_bytes, wire.size());
  }
}

TEST(ClientHello, WhatFollowsTheHelloIsNotItsBusiness) {
  const std::string hello = client_hello(browser_like());
  const std::string ccs("\x14\x03\x03\x00\x01\x01", 6);  // a middlebox-compat CCS record
  ClientHello h;
  ASSERT_EQ(read(hello + ccs, &h), HelloStatus::kDone);
  EXPECT_EQ(h.wire_bytes, hello.size());
}

TEST(ClientHello, AHelloWithoutExtensionsHasNoName) {
  HelloSpec spec;
  spec.extensions = false;
  ClientHello h;
  ASSERT_EQ(read(client_hello(spec), &h), HelloStatus::kDone);
  EXPECT_TRUE(h.server_name.empty());
  EXPECT_TRUE(h.alpn.empty());
}

TEST(ClientHello, OtherProtocolsAreNotTlsFromTheFirstBytes) {
  EXPECT_EQ(read("G"), HelloStatus::kNotTls);
  EXPECT_EQ(read("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), HelloStatus::kNotTls);
  EXPECT_EQ(read("SSH-2.0-OpenSSH_9.2\r\n"), HelloStatus::kNotTls);
  EXPECT_EQ(read(std::string("\x80\x2e\x01\x03\x01", 5)), HelloStatus::kNotTls);  // SSLv2 hello
  EXPECT_EQ(read(std::string("\x16\x02", 2)), HelloStatus::kNotTls);  // not major version 3
  EXPECT_EQ(read(""), HelloStatus::kNeedMore);
}

struct Broken {
  const char* name;
  std::string wire;
  HelloStatus want;
  const char* why;  // a part of the message that says where
};

std::string with_extra(std::vector<std::pair<uint16_t, std::string>> extra) {
  HelloSpec h;
  h.extra = std::move(extra);
  return client_hello(h);
}

TEST(ClientHello, MalformedHellosAreRefusedSayingWhere) {
  HelloSpec s;
  std::vector<Broken> cases;
  {
    HelloSpec h = s;
    h.sni = "example.com.";
    cases.push_back({"trailing dot", client_hello(h), HelloStatus::kMalformed, "ends with a dot"});
    h.sni = "exa mple.com";
    cases.push_back({"space", client_hello(h), HelloStatus::kMalformed, "host name byte 3"});
    h.sni = "a..b";
    cases.push_back({"empty label", client_hello(h), HelloStatus::kMalformed, "empty label"});
    h.sni = std::string("a\0b", 3);
    cases.push_back({"NUL", client_hello(h), HelloStatus::kMalformed, "host name byte 1"});
  }
  cases.push_back({"repeated extension",
                   with_extra({{10, std::string("\x00\x02\x00\x1d", 4)},
                               {10, std::string("\x00\x02\x00\x17", 4)}}),
                   HelloStatus::kMalformed, "extension 0x000a repeated"});
  cases.push_back({"psk not last",
                   with_extra({{41, "xx"}, {10, std::string("\x00\x02\x00\x1d", 4)}}),
                   HelloStatus::kMalformed, "pre_shared_key"});
  cases.push_back({"server_name type 1", with_extra({{0, std::string("\x00\x04\x01\x00\x01x", 6)}}),
                   HelloStatus::kMalformed, "not host_name"});
  cases.push_back({"two server names",
                   with_extra({{0, std::string("\x00\x08\x00\x00\x01x\x00\x00\x01y", 10)}}),
                   HelloStatus::kMalformed, "more than one server_name"});
  cases.push_back({"server_name list length",
                   with_extra({{0, std::string("\x00\x09\x00\x00\x01x", 6)}}),
                   HelloStatus::kMalformed, "server_name list length"});
  cases.push_back({"empty ALPN name", with_extra({{16, std::string("\x00\x03\x00\x01h", 5)}}),
                   HelloStatus::kMalformed, "ALPN"});
  cases.push_back({"odd supported_versions", with_extra({{43, std::string("\x03\x03\x04\x03", 4)}}),
                   HelloStatus::kMalformed, "supported_versions"});
  {
    HelloSpec h = s;
    h.legacy_version = 0x0200;
    cases.push_back({"SSL 2 legacy_version", client_hello(h), HelloStatus::kMalformed,
                     "legacy_version 0x0200"});
    h = s;
    h.session_id = 33;
    cases.push_back({"long session id", client_hello(h), HelloStatus::kMalformed, "session_id"});
    h = s;
    h.ciphers = 0;
    cases.push_back(
        {"no cipher suites", client_hello(h), HelloStatus::kMalformed, "cipher_suites"});
  }
  {
    // Extensions length one byte short of the rest of the hello: patch the message.
    std::string m = test::hello_message(s);
    m.push_back('\0');  // one stray byte after the extensions
    const size_t body = m.size() - 4;
    m[1] = static_cast<char>(body >> 16);
    m[2] = static_cast<char>((body >> 8) & 0xff);
    m[3] = static_cast<char>(body & 0xff);
    cases.push_back({"bytes after the extensions", test::in_records(m, 16384),
                     HelloStatus::kMalformed, "extensions length does not match"});
  }
  {
    std::string w = client_hello(s);
    w[5] = 2;  // server_hello, not client_hello
    cases.push_back({"server hello", w, HelloStatus::kMalformed, "handshake type 2"});
    w = client_hello(s);
    w[3] = 0;
    w[4] = 0;
    cases.push_back({"empty record", w, HelloStatus::kMalformed, "record length 0"});
    w = client_hello(s);
    w[3] = 0x40;
    w[4] = 1;
    cases.push_back({"record over 2^14", w, HelloStatus::kMalformed, "record length 16385"});
    w = client_hello(s);
    w[2] = 5;
    cases.push_back({"record version", w, HelloStatus::kMalformed, "record version 0x0305"});
  }
  {
    HelloSpec h = s;
    h.fragment = 20;
    std::string w = client_hello(h);
    w[25] = 23;  // the second record is application data
    cases.push_back({"interleaved record", w, HelloStatus::kMalformed, "byte 25: record type 23"});
  }
  {
    std::string w("\x16\x03\x01\x00\x04\x01\x00\x40\x01", 9);  // a 16385-byte hello announced
    cases.push_back({"too large", w, HelloStatus::kTooLarge, "16385 bytes"});
  }
  for (const Broken& b : cases) {
    std::string why;
    EXPECT_EQ(read(b.wire, nullptr, &why), b.want) << b.name << ": " << why;
    EXPECT_NE(why.find(b.why), std::string::npos) << b.name << ": got \"" << why << "\"";
  }
}

TEST(HostPattern, MatchesExactWildcardAndAny) {
  EXPECT_TRUE(host_pattern_matches("api.example.com", "api.example.com"));
  EXPECT_TRUE(host_pattern_matches("API.example.com", "api.EXAMPLE.com"));
  EXPECT_FALSE(host_pattern_matches("api.example.com", "www.example.com"));
  EXPECT_TRUE(host_pattern_matches("*.example.com", "a.example.com"));
  EXPECT_TRUE(host_pattern_matches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(host_pattern_matches("*.example.com", "example.com"));
  EXPECT_FALSE(host_pattern_matches("*.example.com", "badexample.com"));
  EXPECT_FALSE(host_pattern_matches("*.example.com", ""));
  EXPECT_TRUE(host_pattern_matches("*", ""));
  EXPECT_TRUE(host_pattern_matches("*", "anything.at.all"));
  std::string why;
  EXPECT_TRUE(valid_host_pattern("*.example.com", &why));
  EXPECT_TRUE(valid_host_pattern("*", &why));
  EXPECT_FALSE(valid_host_pattern("a.*.example.com", &why));
  EXPECT_NE(why.find("'*' only"), std::string::npos) << why;
  EXPECT_FALSE(valid_host_pattern("example.com.", &why));
  EXPECT_FALSE(valid_host_pattern("", &why));
}

}  // namespace
}  // namespace ringpoll::proxy
