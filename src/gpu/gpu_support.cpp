// Supported configs, precisions and size limits of the GPU layer (see gpu_support.h).
#include "gpu/gpu_support.h"

#include <algorithm>
#include <climits>

#include "core/error.h"

namespace moepp::gpu {

const char* precision_name(Precision p) { return p == Precision::kF32 ? "f32" : "bf16"; }

Precision parse_precision(const std::string& s, const std::string& source) {
  if (s == "f32") return Precision::kF32;
  if (s == "bf16") return Precision::kBF16;
  throw Error(source + ": unknown precision '" + s + "' (expected f32 or bf16)");
}

std::string gpu_unsupported_reason(const MoeConfig& cfg) {
  if (cfg.router == RouterKind::kRelu)
    return "the GPU layer does not implement the relu router (ReMoE's variable slot count); use moepp, topk or "
           "adamoe";
  return "";
}

void check_gpu_supported(const MoeConfig& cfg, const std::string& source) {
  const std::string why = gpu_unsupported_reason(cfg);
  if (!why.empty()) throw Error(source + ": " + why);
}

int64_t gpu_max_tokens(const MoeConfig& cfg) {
  // Slots (t * W + k) and FFN row indices are int32 and GEMM row counts cuBLAS ints; element offsets
  // are int64 everywhere.
  return INT_MAX / std::max<int64_t>(1, cfg.slot_width());
}

void check_gpu_tokens(const MoeConfig& cfg, int64_t T, const std::string& source) {
  const int64_t most = gpu_max_tokens(cfg);
  if (T < 0 || T > most)
    throw Error(source + ": " + std::to_string(T) + " tokens is outside the GPU layer's range [0, " +
                std::to_string(most) + "] for this config");
}

}  // namespace moepp::gpu
