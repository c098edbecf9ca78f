// Redis Cluster key slots: CRC16 (XMODEM polynomial 0x1021, as the cluster specification's
// reference implementation) of the key or of its hash tag, modulo 16384. No library we use
// ships this CRC, and the routing code around the client is ours to write.
#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>

#include "client.hpp"

namespace dogpile::redis_detail {
namespace {

constexpr std::array<std::uint16_t, 256> make_table() {
  std::array<std::uint16_t, 256> t{};
  for (unsigned i = 0; i < 256; ++i) {
    auto crc = static_cast<std::uint16_t>(i << 8U);
    for (int b = 0; b < 8; ++b) {
      const unsigned wide = crc;
      crc = (wide & 0x8000U) != 0 ? static_cast<std::uint16_t>((wide << 1U) ^ 0x1021U)
                                  : static_cast<std::uint16_t>(wide << 1U);
    }
    t[i] = crc;
  }
  return t;
}
constexpr auto kTable = make_table();

constexpr std::uint16_t crc16(std::string_view s) noexcept {
  std::uint16_t crc = 0;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    crc = static_cast<std::uint16_t>((crc << 8U) ^ kTable[((crc >> 8U) ^ c) & 0xffU]);
  }
  return crc;
}
// The specification's check value.
static_assert(crc16("123456789") == 0x31c3);

}  // namespace

int key_slot(std::string_view key) noexcept {
  // The hash tag: the bytes between the first '{' and the next '}', if not empty.
  const auto open = key.find('{');
  if (open != std::string_view::npos) {
    const auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return crc16(key) & 16383;
}

KeyGroups group_by_slot(const Client& c, std::span<const std::string> keys) {
  KeyGroups out;
  const auto n = static_cast<std::uint32_t>(keys.size());
  out.order.resize(n);
  if (n == 0) {
    out.start = {0};
    return out;
  }
  if (!c.sharded()) {
    std::iota(out.order.begin(), out.order.end(), 0U);
    out.start = {0, n};
    out.slot = {0};
    return out;
  }
  // (slot, position) packed into one integer and sorted: the groups in slot order, each
  // group's keys in the caller's order, without a map or a vector per group.
  std::vector<std::uint64_t> packed(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    packed[i] = (static_cast<std::uint64_t>(c.slot_of(keys[i])) << 32U) | i;
  }
  std::sort(packed.begin(), packed.end());
  int prev = -1;
  for (std::uint32_t j = 0; j < n; ++j) {
    const auto slot = static_cast<int>(packed[j] >> 32U);
    out.order[j] = static_cast<std::uint32_t>(packed[j]);
    if (slot != prev) {
      out.start.push_back(j);
      out.slot.push_back(slot);
      prev = slot;
    }
  }
  out.start.push_back(n);
  return out;
}

}  // namespace dogpile::redis_detail
