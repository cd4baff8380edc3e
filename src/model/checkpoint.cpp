// Checkpoint save/load (see checkpoint.h). Loading reads the weights through io/weight_source.h, so
// every format it knows (safetensors single/sharded, PyTorch .bin single/sharded) loads.
#include "model/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/weight_source.h"
#include "model/ignored_buffers.h"

namespace moepp {
namespace fs = std::filesystem;

void save_model(const std::string& dir, const ModelConfig& cfg, const ModelParams& params) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("save_model: cannot create directory " + dir + ": " + ec.message());
  io::SafetensorsWriter w;
  for (const auto& [name, t] : params.named(cfg)) w.add_f32(name, *t);
  w.set_metadata("format", "pt");
  w.write((fs::path(dir) / "model.safetensors").string());
  const std::string text = cfg.to_json().dump(2) + "\n";
  io::write_file_atomic((fs::path(dir) / "config.json").string(), text);
}

ModelConfig load_model_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  return ModelConfig::from_json(io::read_json_file(path, "the model config"), path);
}

std::pair<ModelConfig, ModelParams> load_model(const std::string& dir) {
  ModelConfig cfg = load_model_config(dir);
  const std::unique_ptr<io::WeightSource> m = io::open_weights(dir);
  const std::string& source = m->source();
  ModelParams params = ModelParams::zeros(cfg);
  std::set<std::string> loaded;
  for (const ParamSpec& spec : param_specs(cfg)) {
    const std::string& name = spec.name;
    Tensor* t = params.slot(spec);
    if (!m->contains(name)) {
      if (spec.optional) continue;
      throw Error(source + ": missing tensor '" + name + "'");
    }
    const io::WeightInfo info = m->info(name);
    if (info.shape != t->shape)
      throw Error(source + ": tensor '" + name + "' has shape " + shape_str(info.shape) + ", expected " +
                  shape_str(t->shape));
    if (info.dtype != io::DType::kF32 && info.dtype != io::DType::kBF16 && info.dtype != io::DType::kF16)
      throw Error(source + ": tensor '" + name + "' has dtype " + io::dtype_name(info.dtype) +
                  "; expected F32, BF16 or F16");
    m->read_f32(name, t->data.data());
    loaded.insert(name);
  }
  check_no_unexpected_tensors(m->names(), loaded, source);
  return {std::move(cfg), std::move(params)};
}

std::string resolve_model_dir(const std::string& path) {
  const std::filesystem::path latest = std::filesystem::path(path) / "latest";
  if (!std::filesystem::exists(latest)) return path;
  std::ifstream f(latest);
  if (!f) throw Error(latest.string() + ": cannot open");
  std::string name;
  std::getline(f, name);
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    throw Error(latest.string() + ": expected the name of a checkpoint directory, got '" + name + "'");
  return (std::filesystem::path(path) / name).string();
}

}  // namespace moepp
