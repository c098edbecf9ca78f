#pragma once
/// @file error.hpp
/// The exception hierarchy of dogpile-cpp. Every failure the library reports derives from
/// `dogpile::Error`, which derives from `std::runtime_error`. A cache miss is never an
/// exception: it is `std::nullopt`.

#include <stdexcept>
#include <string>

namespace dogpile {

/// Root of every exception thrown by dogpile-cpp.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// `configure()` was called on a region that already has a backend, without
/// `.replace_existing_backend = true`.
class RegionAlreadyConfigured : public Error {
 public:
  using Error::Error;
};

/// A cache operation was attempted on a region that has no backend yet.
class RegionNotConfigured : public Error {
 public:
  using Error::Error;
};

/// A backend name is not registered.
class PluginNotFound : public Error {
 public:
  using Error::Error;
};

/// An option or argument has a bad value; the message names the option.
class ValidationError : public Error {
 public:
  using Error::Error;
};

/// Stored bytes could not be decoded. A region treats this as a miss; it reaches the caller
/// only from direct `Codec` use.
class CantDeserialize : public Error {
 public:
  using Error::Error;
};

/// The in-process `memory` backend holds a value of another C++ type than the one requested.
class TypeMismatch : public Error {
 public:
  using Error::Error;
};

/// A backend (server, database, file) failed.
class BackendError : public Error {
 public:
  using Error::Error;
};

/// An operation did not complete within its timeout.
class TimeoutError : public BackendError {
 public:
  using BackendError::BackendError;
};

/// A mutex was misused: released by a non-owner, or released twice.
class LockError : public Error {
 public:
  using Error::Error;
};

/// A value stored by another program in a format dogpile-cpp cannot read (e.g. a Python pickle).
class UnsupportedFormat : public Error {
 public:
  using Error::Error;
};

namespace detail {
/// Throws `E(message)`. One place to throw keeps call sites short and the hot paths small.
template <class E>
[[noreturn]] inline void throw_error(const std::string& message) {
  throw E(message);
}
}  // namespace detail

}  // namespace dogpile
