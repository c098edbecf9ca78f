// The memcached backend's arguments: dogpile's names parsed into MemcachedOptions, checked, and
// applied to a libmemcached client (servers, behaviors, SASL). Internal to dogpile::memcached.
#pragma once

#include <libmemcached/memcached.h>

#include <string>

#include <nlohmann/json.hpp>

#include "dogpile/backends/memcached.hpp"

namespace dogpile::memcached_detail {

/// Throws ValidationError "memcached backend: argument '<name>' <what>".
[[noreturn]] void bad_argument(const std::string& name, const std::string& what);

/// The options named by a backend's JSON arguments. @throws ValidationError.
MemcachedOptions parse_arguments(const nlohmann::json& arguments);

/// Checks what the arguments' types cannot (a url, positive sizes, whole-second lock timeout).
/// @throws ValidationError.
void check_options(const MemcachedOptions& opts);

/// Adds the servers and sets the behaviors and SASL credentials of `opts` on `master`.
/// @throws ValidationError naming the argument libmemcached refused.
void configure(memcached_st* master, const MemcachedOptions& opts);

}  // namespace dogpile::memcached_detail
