// The typed JSON field getters (see json_fields.h).
#include "io/json_fields.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moepp::io {

using nlohmann::json;

namespace {

// The value of `key`, or nullptr when it is absent or null.
const json* field(const json& j, const std::string& key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

// v as Int when it is a JSON integer that Int can hold.
template <class Int>
bool fits(const json& v, Int* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<Int>::max())) return false;
    *out = static_cast<Int>(u);
    return true;
  }
  const int64_t i = v.get<int64_t>();  // a signed JSON integer (nlohmann stores non-negative ones unsigned)
  if constexpr (std::is_signed_v<Int>) {
    if (i < static_cast<int64_t>(std::numeric_limits<Int>::min()) ||
        i > static_cast<int64_t>(std::numeric_limits<Int>::max()))
      return false;
  } else {
    if (i < 0) return false;
  }
  *out = static_cast<Int>(i);
  return true;
}

template <class Int>
Int to_int(const json& v, const std::string& key, const std::string& source) {
  if (!v.is_number_integer()) throw Error(field_where(source, key) + " must be an integer, got " + v.dump());
  Int out{};
  if (!fits(v, &out))
    throw Error(field_where(source, key) + " must be an integer in [" +
                std::to_string(std::numeric_limits<Int>::min()) + ", " +
                std::to_string(std::numeric_limits<Int>::max()) + "], got " + v.dump());
  return out;
}

}  // namespace

std::string field_where(const std::string& source, const std::string& key) {
  return source + ": field '" + key + "'";
}

bool has_field(const json& j, const std::string& key) { return field(j, key) != nullptr; }

template <class Int>
Int get_int(const json& j, const std::string& key, const std::string& source, std::type_identity_t<Int> def) {
  const json* v = field(j, key);
  return v ? to_int<Int>(*v, key, source) : def;
}
template int32_t get_int<int32_t>(const json&, const std::string&, const std::string&, int32_t);
template int64_t get_int<int64_t>(const json&, const std::string&, const std::string&, int64_t);
template uint64_t get_int<uint64_t>(const json&, const std::string&, const std::string&, uint64_t);

int64_t require_int(const json& j, const std::string& key, const std::string& source) {
  const json* v = field(j, key);
  if (!v) throw Error(field_where(source, key) + " is required");
  return to_int<int64_t>(*v, key, source);
}

double get_number(const json& j, const std::string& key, const std::string& source, double def) {
  const json* v = field(j, key);
  if (!v) return def;
  if (!v->is_number()) throw Error(field_where(source, key) + " must be a number, got " + v->dump());
  const double d = v->get<double>();
  if (!std::isfinite(d)) throw Error(field_where(source, key) + " must be finite");
  return d;
}

bool get_bool(const json& j, const std::string& key, const std::string& source, bool def) {
  const json* v = field(j, key);
  if (!v) return def;
  if (!v->is_boolean()) throw Error(field_where(source, key) + " must be true or false, got " + v->dump());
  return v->get<bool>();
}

std::string get_string(const json& j, const std::string& key, const std::string& source, const std::string& def) {
  const json* v = field(j, key);
  if (!v) return def;
  if (!v->is_string()) throw Error(field_where(source, key) + " must be a string, got " + v->dump());
  return v->get<std::string>();
}

int32_t get_token_id(const json& j, const std::string& key, const std::string& source, int32_t def) {
  const int64_t v = get_int(j, key, source, def);
  if (v < 0 || v > std::numeric_limits<int32_t>::max())
    throw Error(field_where(source, key) + " must be a token id >= 0, got " + std::to_string(v));
  return static_cast<int32_t>(v);
}

}  // namespace moepp::io
