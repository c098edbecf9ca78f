// Test support: captures what dogpile-cpp logs through dogpile::set_logger while alive, then
// restores the previous logger.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dogpile/log.hpp"

namespace dogpile::test {

class CapturedLog {
 public:
  CapturedLog()
      : previous_(dogpile::set_logger([this](dogpile::LogLevel l, std::string_view msg) {
          const std::lock_guard lk(m_);
          lines_.emplace_back(l, std::string(msg));
        })) {}
  ~CapturedLog() { dogpile::set_logger(std::move(previous_)); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;

  /// The lines that contain `needle`.
  std::vector<std::string> containing(const std::string& needle) {
    const std::lock_guard lk(m_);
    std::vector<std::string> out;
    for (const auto& [level, line] : lines_) {
      if (line.find(needle) != std::string::npos) out.push_back(line);
    }
    return out;
  }

 private:
  std::mutex m_;
  std::vector<std::pair<dogpile::LogLevel, std::string>> lines_;
  dogpile::Logger previous_;
};

}  // namespace dogpile::test
