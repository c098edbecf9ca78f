// Depth-limited decoding of stored JSON, MessagePack and CBOR (detail/json_decode.hpp), and
// their writers (codec.hpp's detail::json_bytes): nlohmann's parser, binary readers and
// writers, instantiated here once.

#include "dogpile/detail/json_decode.hpp"

#include "dogpile/codec.hpp"

#include <string>

#include "dogpile/error.hpp"

namespace dogpile::detail {

/// nlohmann's DOM-building SAX handler, refusing nesting deeper than `limit`.
namespace {
class DepthLimitedDomSax {
 public:
  using json = nlohmann::json;
  DepthLimitedDomSax(json& result, std::size_t limit) : dom_(result, true), limit_(limit) {}

  bool null() { return dom_.null(); }
  bool boolean(bool b) { return dom_.boolean(b); }
  bool number_integer(json::number_integer_t i) { return dom_.number_integer(i); }
  bool number_unsigned(json::number_unsigned_t u) { return dom_.number_unsigned(u); }
  bool number_float(json::number_float_t f, const json::string_t& s) {
    return dom_.number_float(f, s);
  }
  bool string(json::string_t& s) { return dom_.string(s); }
  bool binary(json::binary_t& b) { return dom_.binary(b); }
  bool start_object(std::size_t n) {
    enter();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) { return dom_.key(k); }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    enter();
    return dom_.start_array(n);
  }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  // With exceptions allowed, the DOM parser rethrows nlohmann's parse error.
  template <class Exception>
  bool parse_error(std::size_t pos, const std::string& token, const Exception& e) {
    return dom_.parse_error(pos, token, e);
  }

 private:
  void enter() {
    if (++depth_ > limit_) {
      throw_error<CantDeserialize>("cannot decode value: nested deeper than " +
                                   std::to_string(limit_) + " levels");
    }
  }
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::size_t limit_;
  std::size_t depth_ = 0;
};
}  // namespace

/// `bytes` decoded as `format` (strict: the whole input is one value), nested at most `limit`
/// deep. @throws nlohmann::json::exception (parse_error, out_of_range) on malformed bytes, as
/// json::parse / from_msgpack / from_cbor do; CantDeserialize when nested too deep.
nlohmann::json parse_json_limited(std::string_view bytes, nlohmann::json::input_format_t format,
                                  std::size_t limit) {
  nlohmann::json result;
  DepthLimitedDomSax sax(result, limit);
  if (!nlohmann::json::sax_parse(bytes.begin(), bytes.end(), &sax, format, /*strict=*/true)) {
    throw_error<CantDeserialize>("cannot decode value: malformed input");
  }
  return result;
}

bool sax_parse_header(std::string_view header, EnvelopeHeaderSax& sax) {
  return nlohmann::json::sax_parse(header.begin(), header.end(), &sax,
                                   nlohmann::json::input_format_t::json, /*strict=*/true);
}

std::string json_bytes(const nlohmann::json& j, Format format) {
  switch (format) {
    case Format::msgpack: {
      auto v = nlohmann::json::to_msgpack(j);
      return {v.begin(), v.end()};
    }
    case Format::cbor: {
      auto v = nlohmann::json::to_cbor(j);
      return {v.begin(), v.end()};
    }
    case Format::json:
      break;
  }
  return j.dump();
}

}  // namespace dogpile::detail
