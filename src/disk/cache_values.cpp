// DiskCache values: how a value becomes a row (the serializer, then inline or a value file
// over disk_min_file_size) and how a row becomes a value again. Every write and read of a value
// goes through here, so that all paths agree.
#include "cache_impl.hpp"
#include "cache_sql.hpp"

namespace dogpile {

using namespace std::chrono_literals;

namespace detail {

// ---- values ------------------------------------------------------------------------------------

Stored DiskCacheImpl::store(const DiskValue& value) const {
  // The serializer is applied here and in materialize() only, so that every path (set, add,
  // set_many, push, memoize) agrees with every read.
  std::optional<DiskValue> encoded;
  if (opts_.serializer) encoded = opts_.serializer->encode(value);
  const DiskValue& v = encoded ? *encoded : value;
  if (opts_.max_value_bytes) {
    std::size_t n = 0;
    if (const auto* t = std::get_if<std::string>(&v)) n = t->size();
    if (const auto* b = std::get_if<Bytes>(&v)) n = b->data.size();
    if (n > *opts_.max_value_bytes) {
      throw_error<ValidationError>(
          "disk cache " + dir_.string() + ": cannot store a value of " + std::to_string(n) +
          " bytes" + (encoded ? " (as the serializer encoded it)" : "") +
          ": more than max_value_bytes (" + std::to_string(*opts_.max_value_bytes) +
          "); raise max_value_bytes, or use set_stream");
    }
  }
  Stored out;
  auto min = static_cast<std::size_t>(min_file_size_.load(std::memory_order_relaxed));
  if (const auto* t = std::get_if<std::string>(&v)) {
    if (utf8_length(*t) >= min) {
      out.mode = kModeText;
      out.size = static_cast<std::int64_t>(t->size());
      out.file = PendingFile(dir_, write_value_file(dir_, *t, modes_));
      return out;
    }
  } else if (const auto* b = std::get_if<Bytes>(&v)) {
    if (b->data.size() >= min) {
      out.mode = kModeBinary;
      out.size = static_cast<std::int64_t>(b->data.size());
      out.file = PendingFile(dir_, write_value_file(dir_, b->data, modes_));
      return out;
    }
  }
  out.inline_value = v;
  return out;
}

std::optional<DiskValue> DiskCacheImpl::materialize(Row& row, const Key& key) const {
  auto v = materialize_stored(row, key);
  if (!v || !opts_.serializer) return v;
  try {
    return opts_.serializer->decode(std::move(*v));
  } catch (const CantDeserialize& e) {
    throw CantDeserialize("disk cache " + dir_.string() + ": the value of key " + key.repr() +
                          " cannot be decoded by the " + opts_.serializer->name() +
                          " serializer: " + e.what());
  }
}

std::optional<DiskValue> DiskCacheImpl::materialize_stored(Row& row, const Key& key) const {
  switch (row.mode) {
    case kModeRaw:
      if (!row.value) break;
      return std::move(row.value);  // each row is materialized once (checks throw before)
    case kModeBinary:
    case kModeText: {
      if (!row.filename) break;
      std::optional<std::string> data;
      try {
        data = read_value_file(dir_, *row.filename, opts_.max_value_bytes.value_or(SIZE_MAX));
      } catch (const ValueTooLargeError& e) {
        throw ValueTooLargeError("disk cache " + dir_.string() + ": the value of key " +
                                 key.repr() + ": " + e.what());
      }
      if (!data) return std::nullopt;  // removed by a concurrent writer: a miss
      if (row.mode == kModeText) return DiskValue(std::move(*data));
      return DiskValue(Bytes{std::move(*data)});
    }
    case kModePickle:
      throw UnsupportedFormat("disk cache " + dir_.string() + ": the value of key " + key.repr() +
                              " was pickled by Python (mode PICKLE); only int, float, str and "
                              "bytes values can be read from C++");
    default:
      break;
  }
  throw UnsupportedFormat("disk cache " + dir_.string() + ": the value of key " + key.repr() +
                          " has an unknown storage mode " + std::to_string(row.mode));
}

void bind_row(sqlite3_stmt* s, double now, const std::optional<Duration>& expire,
              const std::optional<Key>& tag, const Stored& st, const std::string& rel) {
  sqlite3_bind_double(s, 2, now);
  if (expire) {
    sqlite3_bind_double(s, 3, now + seconds(*expire));
  } else {
    sqlite3_bind_null(s, 3);
  }
  bind_opt_key(s, 4, tag);
  sqlite3_bind_int64(s, 5, st.size);
  sqlite3_bind_int(s, 6, st.mode);
  if (!rel.empty()) {
    bind_text(s, 7, rel);
    sqlite3_bind_null(s, 8);
  } else {
    sqlite3_bind_null(s, 7);
    bind_value(s, 8, *st.inline_value);
  }
}

}  // namespace detail

}  // namespace dogpile
