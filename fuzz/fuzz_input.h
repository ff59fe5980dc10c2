#pragma once
// A fuzzer's input read as a recipe: one byte at a time (zeros once it runs out), and short
// strings with a length byte in front.
#include <cstddef>
#include <cstdint>
#include <string>

namespace ringpoll::fuzz {

struct FuzzInput {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  // A string of 0..max bytes.
  std::string text(size_t max) {
    std::string s;
    const size_t len = byte() % (max + 1);
    for (size_t i = 0; i < len; ++i) s.push_back(static_cast<char>(byte()));
    return s;
  }
};

}  // namespace ringpoll::fuzz
