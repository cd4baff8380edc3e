// The inference commands' expert group (see inference_group.h).
#include "cli/inference_group.h"

#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"

namespace moepp::cli {

void add_ep_size_option(CLI::App* sub, int64_t& ep_size) {
  sub->add_option("--ep-size", ep_size,
                  "ranks the FFN experts are split over; under mpirun it must equal the number of processes")
      ->capture_default_str();
}

void add_zc_bias_option(CLI::App* sub, float& zc_bias) {
  sub->add_option("--zc-bias", zc_bias,
                  "MoE++: added to the zero-computation experts' router scores (> 0: fewer FFN experts per "
                  "token, faster, some quality; < 0: more); docs/inference.md")
      ->capture_default_str();
}

void add_kv_dtype_option(CLI::App* sub, std::string& kv_dtype) {
  sub->add_option("--kv-dtype", kv_dtype,
                  "KV cache: auto (f32 with f32 weights, bf16 with bf16, int8 and q4), f32 or bf16; "
                  "docs/inference.md")
      ->capture_default_str();
}

void add_packed_prefill_option(CLI::App* sub, bool& packed_prefill) {
  sub->add_flag("--packed-prefill", packed_prefill,
                "with --dtype bf16: also keep the weights packed for products of many rows (faster prefill and "
                "evaluation, twice the weight memory); docs/inference.md");
}

void add_adaptive_threads_option(CLI::App* sub, bool& adaptive_threads) {
  sub->add_flag("--adaptive-threads,!--no-adaptive-threads", adaptive_threads,
                "decode with fewer OpenMP threads while other processes hold cores (the same outputs; on by "
                "default, --no-adaptive-threads keeps every decode step at all threads); docs/inference.md");
}

Comm* inference_expert_group(int64_t ep_size, const std::string& who) {
  Comm& job = job_comm();
  const int64_t P = job.size();
  if (P == 1) {
    if (ep_size != 1)
      throw JobWideError(who + ": --ep-size " + std::to_string(ep_size) + " needs " + std::to_string(ep_size) +
                         " processes: run it under mpirun -np " + std::to_string(ep_size) +
                         " (this is one process; without mpirun --ep-size must be 1)");
    return nullptr;
  }
  if (ep_size != P)
    throw JobWideError(who + ": --ep-size " + std::to_string(ep_size) + " under mpirun with " + std::to_string(P) +
                       " processes: inference splits the FFN experts over every rank (no data parallelism), so "
                       "--ep-size must equal the number of processes, " + std::to_string(P));
  return &job;
}

std::string expert_group_summary(const Decoder& dec) {
  if (!dec.expert_group()) return "";
  ExpertGroupStats t;
  for (const ExpertGroupStats& s : dec.expert_group_stats()) {
    t.calls += s.calls;
    t.rows += s.rows;
    t.bytes += s.bytes;
    t.comm_seconds += s.comm_seconds;
  }
  const auto& layers = dec.weights().layers;
  const long long first = layers.empty() ? 0 : layers[0].ffn_first, end = layers.empty() ? 0 : layers[0].ffn_end;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "expert group of %d ranks (FFN experts [%lld, %lld) of each layer here): %llu FFN allreduces, "
                "%llu rows, %.2f MB, %.3f s in allreduce on rank %d",
                dec.expert_group()->size(), first, end,
                static_cast<unsigned long long>(t.calls), static_cast<unsigned long long>(t.rows),
                static_cast<double>(t.bytes) / 1e6, t.comm_seconds, dec.expert_group()->rank());
  return buf;
}

}  // namespace moepp::cli
