// What the GPU layer runs: the configs it supports (every router option of the CPU layer except the
// ReLU router, whose variable slot count it does not implement), its precisions, and the size limits of
// its 32-bit slot indices. Host code only; the GPU layer calls these before it touches the device.
#pragma once

#include <cstdint>
#include <string>

#include "moe/moe_config.h"

namespace moepp::gpu {

// F32: everything in fp32 (parity with the CPU layer within 1e-5). BF16: the FFN experts' inputs,
// weights and activations in BF16 with fp32 accumulation; router, combine, zero-computation experts
// and every parameter gradient stay fp32 (docs/gpu.md).
enum class Precision { kF32, kBF16 };
const char* precision_name(Precision p);
// "f32" | "bf16"; throws moepp::Error naming `source` otherwise.
Precision parse_precision(const std::string& s, const std::string& source);

// "" when the GPU layer runs `cfg`, else why not.
std::string gpu_unsupported_reason(const MoeConfig& cfg);
// Throws moepp::Error "<source>: <reason>" when the GPU layer does not run cfg.
void check_gpu_supported(const MoeConfig& cfg, const std::string& source);

// The largest token count the GPU layer takes for cfg: its T · K slots must fit the int32 slot indices.
int64_t gpu_max_tokens(const MoeConfig& cfg);
// Throws moepp::Error naming `source` when T is negative or above gpu_max_tokens(cfg).
void check_gpu_tokens(const MoeConfig& cfg, int64_t T, const std::string& source);

}  // namespace moepp::gpu
