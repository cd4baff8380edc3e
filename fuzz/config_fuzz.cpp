// libFuzzer target for the JSON configs: the first input byte chooses the parser (0: the model's
// config.json, ModelConfig; 1: a layer config, MoeConfig; 2: a training config, TrainConfig, whose
// "model" object then goes through ModelConfig as the trainer's would), the rest is the JSON text,
// parsed as io::read_json_file parses a file. A moepp::Error is the expected outcome for bad input;
// any other exception, crash or sanitizer report (signed overflow included) is a finding, and so is an
// accepted config outside the documented limits (docs/limits.md).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "io/json_file.h"
#include "model/model_config.h"
#include "moe/moe_config.h"
#include "train/train_config.h"

namespace {

void check_moe(const moepp::MoeConfig& c) {
  if (c.hidden > moepp::kMaxHidden || c.intermediate > moepp::kMaxIntermediate || c.n_experts > moepp::kMaxExperts ||
      c.n_ffn() < 1 || c.top_k < 1 || c.top_k > c.n_experts)
    std::abort();
}

void check_model(const moepp::ModelConfig& c) {
  check_moe(c.moe);
  if (c.n_layers > moepp::kMaxLayers || c.max_pos > moepp::kMaxPositions || c.weight_bound() > moepp::kMaxModelWeights)
    std::abort();
  // What from_json accepts, to_json writes and from_json reads back to the same config.
  if (!moepp::ModelConfig::from_json(c.to_json(), "round-trip").differences(c).empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const nlohmann::json j = moepp::io::parse_json_text(text, "fuzz-input");
    switch (data[0] % 3) {
      case 0: check_model(moepp::ModelConfig::from_json(j, "fuzz-input")); break;
      case 1: check_moe(moepp::MoeConfig::from_json(j, "fuzz-input")); break;
      default: {
        const moepp::TrainConfig t = moepp::TrainConfig::from_json(j, "fuzz-input");
        check_model(moepp::ModelConfig::from_json(t.model, "fuzz-input"));
      }
    }
  } catch (const moepp::Error&) {
    // Rejected input: fine.
  }
  return 0;
}
