#pragma once
/// @file error.hpp
/// The exception hierarchy of dogpile-cpp. Every failure the library reports derives from
/// `dogpile::Error`, which derives from `std::runtime_error`. A cache miss is never an
/// exception: it is `std::nullopt`.

#include <memory>
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

/// A backend (server, database, file) failed. The subclasses say how, so that a program can
/// branch on the type: `ConnectionError` (reconnect later, serve without the cache),
/// `TimeoutError` (the command may have run), `ReplyError` (the server refused the command:
/// a bug or a misconfiguration, retrying will not help), `ClusterDownError` (a cluster or
/// sentinel service has no master for the key right now: retry after the failover). A plain
/// `BackendError` is any other storage failure (a file, a database).
///
/// A region adds where the error happened: `what()` then starts with
/// `region 'name': get key 'k': ` (or `… get_multi of 3 keys: `, or `an unnamed region: …`), and
/// `region()`, `operation()` and `key()` return the parts. Copies share the message (nothrow copy).
class BackendError : public Error {
 public:
  /// An error with the backend's `message` (no region context yet).
  explicit BackendError(const std::string& message)
      : Error(message), info_(std::make_shared<Info>(Info{message, message, {}, {}, {}})) {}
  /// As the `std::string` constructor.
  explicit BackendError(const char* message) : BackendError(std::string(message)) {}

  /// The message, with the region's context once the region added it.
  [[nodiscard]] const char* what() const noexcept override { return info_->what.c_str(); }
  /// The backend's own message, without the region's context.
  [[nodiscard]] const std::string& detail() const noexcept { return info_->detail; }
  /// The region's name; empty until a region added its context.
  [[nodiscard]] const std::string& region() const noexcept { return info_->region; }
  /// The region operation: "get", "set", "get_multi", "set_multi", "delete", "delete_multi",
  /// "lock"; empty until a region added its context.
  [[nodiscard]] const std::string& operation() const noexcept { return info_->operation; }
  /// The key (as the caller gave it), or "N keys" for a multi-key operation.
  [[nodiscard]] const std::string& key() const noexcept { return info_->key; }

  /// Adds where the error happened (the first context added wins: the innermost caller knows
  /// best). Called by a region before it rethrows; not thread-safe against a concurrent
  /// `what()` on the same object, which a freshly caught exception never has.
  void add_context(std::string region, std::string operation, std::string key) {
    if (!info_->operation.empty()) return;
    auto i = std::make_shared<Info>(*info_);
    i->region = std::move(region);
    i->operation = std::move(operation);
    i->key = std::move(key);
    const bool multi = i->operation.ends_with("_multi");
    i->what =
        (i->region.empty() ? std::string("an unnamed region") : "region '" + i->region + "'") +
        ": " + i->operation + (multi ? " of " : " key '") + i->key + (multi ? "" : "'") + ": " +
        i->detail;
    info_ = std::move(i);
  }

 private:
  struct Info {
    std::string what, detail, region, operation, key;
  };
  std::shared_ptr<const Info> info_;
};

/// The server could not be reached, or closed the connection (refused, reset, unreachable,
/// authentication refused at connect). The command was not run, or its reply was lost with the
/// connection. What to do: serve without the cache (`treat_as_miss`) and let the backend
/// reconnect on a later call.
class ConnectionError : public BackendError {
 public:
  using BackendError::BackendError;
};

/// An operation did not complete within its timeout (a server that stopped answering, a lock
/// or a database that stayed busy). The command may have run. What to do: as
/// `ConnectionError`; raise the timeout if the server is only slow.
class TimeoutError : public BackendError {
 public:
  using BackendError::BackendError;
};

/// The server answered with an error (`ERR`, `WRONGTYPE`, `NOAUTH`, `OOM`, memcached's
/// `SERVER_ERROR`/`CLIENT_ERROR`), or with a reply that cannot be used (malformed, over
/// `max_value_bytes`). Retrying the same command gives the same answer: fix the command, the
/// data or the server's configuration.
class ReplyError : public BackendError {
 public:
  using BackendError::BackendError;
};

/// A Redis Cluster or Sentinel service has no master for the key right now (`CLUSTERDOWN`,
/// `MASTERDOWN`, `TRYAGAIN` past the retries, no node serves the slot, a failover in
/// progress). What to do: retry after the failover (seconds), serving without the cache
/// meanwhile.
class ClusterDownError : public BackendError {
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
