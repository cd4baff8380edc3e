// The expert group of the inference commands (generate, eval ppl|mc, serve) from their --ep-size:
// under mpirun the FFN experts are split over every rank of the job (inference has no data
// parallelism), rank 0 runs the command and the other ranks follow its decoder (infer/decoder_followers.h).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "comm/comm.h"
#include "infer/decoder.h"

namespace moepp::cli {

// Adds --ep-size to an inference subcommand.
void add_ep_size_option(CLI::App* sub, int64_t& ep_size);

// Adds --zc-bias (ModelConfig::set_zc_bias: shift the router toward the zero-computation experts).
void add_zc_bias_option(CLI::App* sub, float& zc_bias);

// Adds --kv-dtype (auto, f32 or bf16: the decoder's KV cache; parse_kv_dtype_choice() reads it).
void add_kv_dtype_option(CLI::App* sub, std::string& kv_dtype);

// Adds --packed-prefill (load_decoder's packed_prefill: BF16 weights also packed for prefill).
void add_packed_prefill_option(CLI::App* sub, bool& packed_prefill);
// --adaptive-threads / --no-adaptive-threads (generate, serve): EngineOptions::adaptive_threads; the
// flag's default is the bool's value on entry (the callers take EngineOptions' default).
void add_adaptive_threads_option(CLI::App* sub, bool& adaptive_threads);

// Null in one process (ep_size 1); the job's communicator when ep_size equals the number of
// processes. Any other value throws JobWideError (on every rank) prefixed with `who`.
Comm* inference_expert_group(int64_t ep_size, const std::string& who);

// True on the ranks that only follow (rank > 0 of the decoder's group).
inline bool is_follower(const Decoder& dec) { return dec.expert_group() && dec.expert_group()->rank() != 0; }

// One line on what the decoder's expert group exchanged ("" without a group): ranks, allreduce
// calls, rows, MB and seconds summed over the layers.
std::string expert_group_summary(const Decoder& dec);

}  // namespace moepp::cli
