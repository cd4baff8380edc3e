// `moepp train --device cuda`: the GPU's training step (gpu/gpu_trainer.h) as the trainer's StepBackend
// (train/step_backend.h). make_step_backend gives null for "cpu" (the CPU engine), the GPU backend for
// "cuda" in a build with CUDA, and an error otherwise.
#pragma once

#include <memory>
#include <string>

#include "train/step_backend.h"

namespace moepp::cli {

// device: "cpu" | "cuda"; precision "f32" | "bf16" and gemm "per-expert" | "grouped" (cuda only).
// Throws moepp::Error naming the option for other values, and for cuda in a build without CUDA.
std::unique_ptr<StepBackend> make_step_backend(const std::string& device, const std::string& precision,
                                               const std::string& gemm);

}  // namespace moepp::cli
