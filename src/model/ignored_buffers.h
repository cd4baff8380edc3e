// Non-parameter tensors that LLaMA-family checkpoints written by other tools may carry: the rotary
// embedding buffers `model.layers.N.self_attn.rotary_emb.{inv_freq,cos_cached,sin_cached}`. The
// released MoE++ code never saves them (they are non-persistent buffers) and Hugging Face ignores them
// on load; moepp skips exactly these and rejects every other unknown tensor.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace moepp {

// True for exactly `model.layers.<decimal>.self_attn.rotary_emb.` + inv_freq | cos_cached | sin_cached.
bool is_ignored_rotary_buffer(const std::string& name);

// Every name in `names` must be in `expected` or be an ignored rotary buffer: throws moepp::Error
// "<source>: unexpected tensor '<name>' for this config" on the first that is neither. When rotary
// buffers were skipped, prints one notice line to stderr naming `source` and how many.
void check_no_unexpected_tensors(const std::vector<std::string>& names, const std::set<std::string>& expected,
                                 const std::string& source);

}  // namespace moepp
