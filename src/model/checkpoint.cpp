// Checkpoint save/load (see checkpoint.h). Loading reads the weights through io/weight_source.h, so
// every format it knows (safetensors single/sharded, PyTorch .bin single/sharded) loads.
#include "model/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <map>
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

bool is_ffn_expert(const ParamSpec& spec) {
  return spec.kind == ParamKind::kMoe && (spec.moe.kind == MoeParamKind::kUp || spec.moe.kind == MoeParamKind::kDown);
}

int shard_of(const ModelConfig& cfg, const ParamSpec& spec, int count) {
  if (!is_ffn_expert(spec) || count == 1) return 0;
  const int64_t n_ffn = cfg.layer_moe(static_cast<int>(spec.layer), false).n_ffn();
  return static_cast<int>(spec.moe.index / (ExpertShard{0, count}.range(n_ffn).second));
}

bool shard_holds(const ModelConfig& cfg, const ParamSpec& spec, ExpertShard shard) {
  return !is_ffn_expert(spec) || shard_of(cfg, spec, shard.count) == shard.index;
}

void keep_shard(ModelParams& params, const ModelConfig& cfg, ExpertShard shard) {
  for (const ParamSpec& spec : param_specs(cfg))
    if (!shard_holds(cfg, spec, shard)) *params.slot(spec) = Tensor();
}

void save_model_shard(const std::string& dir, const ModelConfig& cfg, const ModelParams& params, ExpertShard shard) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("save_model: cannot create directory " + dir + ": " + ec.message());
  io::SafetensorsWriter w;
  for (const ParamSpec& spec : param_specs(cfg)) {
    if (shard_of(cfg, spec, shard.count) != shard.index) continue;
    const Tensor* t = params.slot(spec);
    check(t != nullptr && t->shape == spec.shape, "save_model: this process does not hold '" + spec.name + "'");
    w.add_f32_ref(spec.name, *t);  // the parameters are not copied
  }
  w.set_metadata("format", "pt");
  const std::string file = shard.count == 1 ? "model.safetensors" : io::shard_file_name("model", shard.index, shard.count);
  w.write((fs::path(dir) / file).string());
}

void save_model_index(const std::string& dir, const ModelConfig& cfg, int count) {
  if (count > 1) {
    std::map<std::string, std::string> weight_map;
    uint64_t total = 0;
    for (const ParamSpec& spec : param_specs(cfg)) {
      weight_map[spec.name] = io::shard_file_name("model", shard_of(cfg, spec, count), count);
      total += static_cast<uint64_t>(Tensor::numel_of(spec.shape)) * 4;
    }
    io::write_safetensors_index((fs::path(dir) / "model.safetensors.index.json").string(), weight_map, total);
  }
  io::write_file_atomic((fs::path(dir) / "config.json").string(), cfg.to_json().dump(2) + "\n");
}

void save_model(const std::string& dir, const ModelConfig& cfg, const ModelParams& params) {
  save_model_shard(dir, cfg, params, ExpertShard{});
  save_model_index(dir, cfg, 1);
}

ModelConfig load_model_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  return ModelConfig::from_json(io::read_json_file(path, "the model config"), path);
}

std::pair<ModelConfig, ModelParams> load_model(const std::string& dir, ExpertShard shard) {
  ModelConfig cfg = load_model_config(dir);
  const std::unique_ptr<io::WeightSource> m = io::open_weights(dir);
  const std::string& source = m->source();
  for (int64_t l = 0; l < cfg.n_layers; ++l)  // a clear error for a shard that cannot split the experts
    shard.range(cfg.layer_moe(static_cast<int>(l), false).n_ffn());
  ModelParams params = ModelParams::zeros(cfg);
  keep_shard(params, cfg, shard);
  std::set<std::string> known;  // tensors of the model, read or (other shards' experts) not
  for (const ParamSpec& spec : param_specs(cfg)) {
    const std::string& name = spec.name;
    known.insert(name);
    if (!shard_holds(cfg, spec, shard)) continue;
    Tensor* t = params.slot(spec);
    if (!m->contains(name)) {
      if (spec.optional) continue;
      throw Error(source + ": missing tensor '" + name + "'");
    }
    const io::WeightInfo info = m->info(name);
    if (info.dtype == io::DType::kI8 || info.dtype == io::DType::kU8)
      throw Error(source + ": tensor '" + name + "' is quantised (" + io::dtype_name(info.dtype) +
                  ", from moepp convert --dtype int8|q4): only generate, eval and serve load quantised checkpoints");
    if (info.shape != t->shape)
      throw Error(source + ": tensor '" + name + "' has shape " + shape_str(info.shape) + ", expected " +
                  shape_str(t->shape));
    if (info.dtype != io::DType::kF32 && info.dtype != io::DType::kBF16 && info.dtype != io::DType::kF16)
      throw Error(source + ": tensor '" + name + "' has dtype " + io::dtype_name(info.dtype) +
                  "; expected F32, BF16 or F16");
    m->read_f32(name, t->data.data());
  }
  check_no_unexpected_tensors(m->names(), known, source);
  return {std::move(cfg), std::move(params)};
}

std::pair<ModelConfig, ModelParams> load_model(const std::string& dir) { return load_model(dir, ExpertShard{}); }

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
