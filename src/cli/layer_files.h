// The files of the golden I/O of one MoE++ layer (docs/layer.md, "Golden I/O"): reading a config,
// weights and inputs with every check the format asks for, and writing the outputs and gradients. Shared
// by `moepp layer` (the CPU layer) and moepp_gpu_layer (the GPU layer, bench/gpu/), so that both read and
// write exactly the same files. Errors are moepp::Error naming the file and the tensor.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"

namespace moepp::cli {

struct LayerFiles {
  MoeConfig cfg;
  MoeParams params;              // every tensor the config needs (gate_map zero when absent in layer 0)
  std::set<std::string> loaded;  // the weight names the file held (their gradients are written)
  Tensor x;                      // [T, D]
  Tensor z_prev;                 // [T, E] when cfg.uses_residual(), else empty
  Tensor dy, dz_out;             // [T, D], [T, E] (empty when not given)
  bool backward = false;         // grad_y given
  int64_t T() const { return x.shape.empty() ? 0 : x.shape[0]; }
};

// Reads and checks all three files (missing, extra and mis-shaped tensors are errors).
LayerFiles read_layer_files(const std::string& config, const std::string& weights, const std::string& inputs);

// What a layer computed, in the golden I/O's names.
struct LayerResults {
  Tensor y, router_logits;
  std::vector<int32_t> ids;   // [T, W]
  std::vector<float> w;       // [T, W]
  std::vector<int32_t> kept;  // [T, W]
  int64_t W = 0;
  float aux_loss = 0.0f;      // written in training mode
  Tensor dx, dz_prev;         // with grad_y; dz_prev when the gating residual was used
  MoeParams grads;            // with grad_y (shaped as MoeParams::zeros)
};

// Writes y, router_logits, topk_ids, topk_weights, slot_kept, aux_loss (training) and, when
// in.backward, grad.x, grad.gate_residual (residual) and grad.<name> for every loaded weight; atomically.
void write_layer_results(const std::string& path, const LayerFiles& in, const LayerResults& r);

}  // namespace moepp::cli
