// Typed fields of a JSON config object (config.json, layer configs, training configs): the getters the
// model, MoE layer and training configs read their keys with, so that all of them follow one rule.
//
// The rule: a key whose value is null is treated exactly as an absent key. Hugging Face writes null
// for a None attribute, so null means "not set": the default is taken, or a required key is reported
// as missing. (A key whose unset state has its own documented meaning, such as moe_capacity_factor
// null = dropless, reads it through has_field.)
//
// Every fault throws moepp::Error with a message "<source>: field '<key>' ...": "is required",
// "must be an integer, got 2.5", "must be an integer in [lo, hi], got 1e+30", "must be a number, got
// \"x\"", "must be finite", "must be true or false, got 1", "must be a string, got 3", "must be a
// token id >= 0, got -1". `source` names the file (or request) in messages; `j` is the object holding
// the key (anything else holds no field).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include <nlohmann/json_fwd.hpp>

namespace moepp::io {

// "<source>: field '<key>'": the start of every message about a field (also for checks made later,
// such as a config's validate()).
std::string field_where(const std::string& source, const std::string& key);

// True when j holds `key` with a value other than null.
bool has_field(const nlohmann::json& j, const std::string& key);

// An integer field as Int: int64_t unless named otherwise (get_int<int32_t>, get_int<uint64_t>: the
// three types defined). A JSON integer that Int cannot hold is an error (2^64 - 1 for int64_t, -1 for uint64_t),
// and so is any non-integer (2.0, "2", true).
template <class Int = int64_t>
Int get_int(const nlohmann::json& j, const std::string& key, const std::string& source,
            std::type_identity_t<Int> def);
int64_t require_int(const nlohmann::json& j, const std::string& key, const std::string& source);

// A number (integer or floating point) that must be finite.
double get_number(const nlohmann::json& j, const std::string& key, const std::string& source, double def);
bool get_bool(const nlohmann::json& j, const std::string& key, const std::string& source, bool def);
std::string get_string(const nlohmann::json& j, const std::string& key, const std::string& source,
                       const std::string& def);
// A token id: an integer in [0, 2^31 - 1].
int32_t get_token_id(const nlohmann::json& j, const std::string& key, const std::string& source, int32_t def);

}  // namespace moepp::io
