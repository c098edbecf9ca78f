// detail/json_text.hpp: a JSON value as a short text for error messages.

#include "dogpile/detail/json_text.hpp"

#include "dogpile/detail/python_float.hpp"

namespace dogpile::detail {

std::string json_text(const nlohmann::json& v) {
  using J = nlohmann::json;
  switch (v.type()) {
    case J::value_t::string:
      return "\"" + *v.get_ptr<const J::string_t*>() + "\"";
    case J::value_t::boolean:
      return *v.get_ptr<const J::boolean_t*>() ? "true" : "false";
    case J::value_t::number_integer:
      return std::to_string(*v.get_ptr<const J::number_integer_t*>());
    case J::value_t::number_unsigned:
      return std::to_string(*v.get_ptr<const J::number_unsigned_t*>());
    case J::value_t::number_float: {
      std::string s;
      append_python_float(s, *v.get_ptr<const J::number_float_t*>());
      return s;
    }
    case J::value_t::null:
      return "null";
    case J::value_t::object:
      return "an object of " + std::to_string(v.size()) + " entries";
    case J::value_t::array:
      return "an array of " + std::to_string(v.size()) + " elements";
    case J::value_t::binary:
    case J::value_t::discarded:
      break;
  }
  return v.type_name();
}

}  // namespace dogpile::detail
