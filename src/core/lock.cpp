// lock.hpp's random draw for early refresh, compiled once (<random> stays out of the headers).

#include <random>

#include "dogpile/lock.hpp"

namespace dogpile::detail {

double uniform_open01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // (0, 1]: log(0) must never happen.
  return 1.0 - std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace dogpile::detail
