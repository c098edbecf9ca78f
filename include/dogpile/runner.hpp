#pragma once
/// @file runner.hpp
/// Async creation runners. When a value is expired and this caller wins the lock, the region
/// hands `(key, job, handle)` to the runner and returns the stale value at once. `job()`
/// creates and stores the value; `handle` owns the dogpile mutex and releases it when
/// destroyed, so a runner only has to run `job` and then drop `handle` (possibly on another
/// thread).

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "dogpile/mutex.hpp"

namespace dogpile {

/// `runner(key, job, handle)`. Must eventually run `job` (or not) and destroy `handle`.
using AsyncCreationRunner =
    std::function<void(std::string key, std::function<void()> job, MutexHandle handle)>;

/// A runner backed by `n` threads (shared by every copy of the returned function); destroying
/// the last copy finishes the queued jobs.
/// @throws ValidationError if `n == 0`.
AsyncCreationRunner thread_pool_runner(std::size_t n);

}  // namespace dogpile
