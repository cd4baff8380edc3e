// WeightSource implementations (see weight_source.h): safetensors (single file or shards, through
// SafetensorsModel) and PyTorch zip checkpoints (pytorch_model.bin or the shards listed by
// pytorch_model.bin.index.json, through TorchCheckpoint), and open_weights choosing between them.
#include "io/weight_source.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"
#include "io/torch_checkpoint.h"

namespace moepp::io {
namespace {

namespace fs = std::filesystem;

std::string q(const std::string& s) { return "'" + s + "'"; }

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ---------------------------------------------------------------------------------------------------

class SafetensorsSource : public WeightSource {
 public:
  // `file` is model.safetensors or model.safetensors.index.json.
  explicit SafetensorsSource(const std::string& file) : source_(file), model_(file) {}

  const std::string& source() const override { return source_; }
  std::vector<std::string> names() const override { return model_.names(); }
  bool contains(const std::string& name) const override { return model_.contains(name); }
  WeightInfo info(const std::string& name) const override {
    if (!model_.contains(name)) throw Error(source_ + ": no tensor named " + q(name));
    const TensorInfo& i = model_.info(name);
    return {i.dtype, i.shape};
  }
  void read_f32(const std::string& name, float* out) const override {
    const WeightInfo i = info(name);
    if (i.dtype != DType::kF32 && i.dtype != DType::kF16 && i.dtype != DType::kBF16)
      throw Error(source_ + ": tensor " + q(name) + " has dtype " + dtype_name(i.dtype) +
                  "; expected F32, F16 or BF16");
    convert_to_f32(i.dtype, model_.raw(name), Tensor::numel_of(i.shape), out);
  }
  const uint8_t* mapped(const std::string& name) const override {
    if (!model_.contains(name)) throw Error(source_ + ": no tensor named " + q(name));
    return model_.raw(name);
  }

 private:
  std::string source_;
  SafetensorsModel model_;
};

// ---------------------------------------------------------------------------------------------------

class TorchSource : public WeightSource {
 public:
  // `file` is a .bin checkpoint, or an index .json {"metadata": ..., "weight_map": {tensor: shard}}.
  explicit TorchSource(const std::string& file, bool index) : source_(file) {
    if (!index) {
      shards_.push_back(std::make_unique<TorchCheckpoint>(file));
      for (const std::string& n : shards_[0]->names()) where_[n] = 0;
      return;
    }
    const nlohmann::json root = read_json_file(file, "the checkpoint index");
    if (!root.is_object()) throw Error(file + ": index is not a JSON object");
    if (root.contains("metadata") && !root["metadata"].is_object())
      throw Error(file + ": field 'metadata' is not an object");
    if (!root.contains("weight_map")) throw Error(file + ": missing field 'weight_map'");
    const nlohmann::json& wm = root["weight_map"];
    if (!wm.is_object()) throw Error(file + ": field 'weight_map' is not an object");
    const fs::path base = fs::path(file).parent_path();
    std::map<std::string, size_t> shard_ids;  // shard file name -> index in shards_
    for (const auto& [name, shard] : wm.items()) {
      if (!shard.is_string()) throw Error(file + ": field 'weight_map' entry " + q(name) + " is not a string");
      const std::string& f = shard.get_ref<const std::string&>();
      if (f.empty() || fs::path(f).is_absolute())
        throw Error(file + ": field 'weight_map' entry " + q(name) + ": shard file name " + q(f) +
                    " must be a non-empty relative path");
      auto it = shard_ids.find(f);
      if (it == shard_ids.end()) {
        const fs::path p = base / f;
        if (!is_file(p))
          throw Error(file + ": tensor " + q(name) + " is in shard " + q(f) + ", but " + p.string() +
                      " does not exist");
        shards_.push_back(std::make_unique<TorchCheckpoint>(p.string()));
        it = shard_ids.emplace(f, shards_.size() - 1).first;
      }
      if (!shards_[it->second]->contains(name))
        throw Error(file + ": tensor " + q(name) + " is listed in shard " + q(f) + ", but that shard does not hold it");
      where_[name] = it->second;
    }
  }

  const std::string& source() const override { return source_; }
  std::vector<std::string> names() const override {
    std::vector<std::string> r;
    r.reserve(where_.size());
    for (const auto& kv : where_) r.push_back(kv.first);
    return r;
  }
  bool contains(const std::string& name) const override { return where_.count(name) != 0; }
  WeightInfo info(const std::string& name) const override {
    const TorchTensorRef& r = shard_of(name).info(name);
    return {r.dtype, r.shape};
  }
  void read_f32(const std::string& name, float* out) const override { shard_of(name).read_f32(name, out); }
  const uint8_t* mapped(const std::string& name) const override { return shard_of(name).mapped(name); }

 private:
  std::string source_;
  std::vector<std::unique_ptr<TorchCheckpoint>> shards_;
  std::map<std::string, size_t> where_;  // tensor -> shard index

  const TorchCheckpoint& shard_of(const std::string& name) const {
    auto it = where_.find(name);
    if (it == where_.end()) throw Error(source_ + ": no tensor named " + q(name));
    return *shards_[it->second];
  }
};

}  // namespace

std::unique_ptr<WeightSource> open_weights(const std::string& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec || !fs::exists(st)) throw Error("cannot open model " + dir + ": no such file or directory");
  if (fs::is_regular_file(st)) {  // a weights file given directly
    if (ends_with(dir, ".safetensors") || ends_with(dir, ".safetensors.index.json"))
      return std::make_unique<SafetensorsSource>(dir);
    if (ends_with(dir, ".bin.index.json")) return std::make_unique<TorchSource>(dir, true);
    if (ends_with(dir, ".bin") || ends_with(dir, ".pt") || ends_with(dir, ".pth"))
      return std::make_unique<TorchSource>(dir, false);
    throw Error(dir + ": not a weights file (expected .safetensors, .bin, .pt, .pth or an index .json)");
  }
  const fs::path d(dir);
  if (is_file(d / "model.safetensors")) return std::make_unique<SafetensorsSource>((d / "model.safetensors").string());
  if (is_file(d / "model.safetensors.index.json"))
    return std::make_unique<SafetensorsSource>((d / "model.safetensors.index.json").string());
  if (is_file(d / "pytorch_model.bin")) return std::make_unique<TorchSource>((d / "pytorch_model.bin").string(), false);
  if (is_file(d / "pytorch_model.bin.index.json"))
    return std::make_unique<TorchSource>((d / "pytorch_model.bin.index.json").string(), true);
  throw Error("model directory " + dir +
              " holds none of model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
              "pytorch_model.bin.index.json");
}

}  // namespace moepp::io
