// `moepp bench infer` runner (see infer_bench.h). The weights come from a synthetic WeightSource
// (normal(0, 0.02) from a per-tensor seed, generated once and reused for every dtype). The MoE++
// variant scales its zero-computation experts' router rows by a factor found by bisection so that the
// measured share of slots on zero-computation experts (all layers, the prefill prompt) is near the
// target; the achieved share is reported.
#include "infer_bench.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <omp.h>

#include "bench_env.h"
#include "core/error.h"
#include "infer/decoder.h"
#include "io/weight_source.h"
#include "model/model_params.h"

namespace moepp {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Random weights for every tensor of a config, generated on demand: ModelParams::init_random's rule
// (norms 1, constant experts' v normal(0, 1), the rest normal(0, 0.02)), but per tensor and thread.
class RandomWeights : public io::WeightSource {
 public:
  explicit RandomWeights(const ModelConfig& cfg) {
    for (ParamSpec& s : param_specs(cfg)) {
      shape_[s.name] = s.shape;
      spec_[s.name] = std::move(s);
    }
  }
  float zc_scale = 1.0f;  // multiplies the router rows of zero-computation experts
  int64_t n_ffn = 0, hidden = 0;
  const std::string& source() const override { return src_; }
  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (auto& [k, v] : shape_) n.push_back(k);
    return n;
  }
  bool contains(const std::string& name) const override { return shape_.count(name) != 0; }
  io::WeightInfo info(const std::string& name) const override { return {io::DType::kF32, shape_.at(name)}; }
  const uint8_t* mapped(const std::string&) const override { return nullptr; }
  void read_f32(const std::string& name, float* out) const override {
    const std::vector<float>& v = values(name);
    std::copy(v.begin(), v.end(), out);
    const ParamSpec& spec = spec_.at(name);
    if (spec.kind == ParamKind::kMoe && spec.moe.kind == MoeParamKind::kWg)
      for (int64_t e = n_ffn; e < shape_.at(name)[0]; ++e)
        for (int64_t j = 0; j < hidden; ++j) out[e * hidden + j] *= zc_scale;
  }

 private:
  std::string src_ = "random weights";
  std::map<std::string, std::vector<int64_t>> shape_;
  std::map<std::string, ParamSpec> spec_;
  mutable std::map<std::string, std::vector<float>> cache_;  // generated once, reused by every load

  const std::vector<float>& values(const std::string& name) const {
    auto it = cache_.find(name);
    if (it != cache_.end()) return it->second;
    std::vector<float>& out = cache_[name];
    out.resize(Tensor::numel_of(shape_.at(name)));
    const int64_t n = static_cast<int64_t>(out.size());
    const ParamSpec& spec = spec_.at(name);
    if (spec.kind == ParamKind::kAttnNorm || spec.kind == ParamKind::kMlpNorm || spec.kind == ParamKind::kFinalNorm) {
      std::fill(out.begin(), out.end(), 1.0f);
      return out;
    }
    const bool is_const_v = spec.kind == ParamKind::kMoe && spec.moe.kind == MoeParamKind::kConstV;
    const float std = is_const_v ? 1.0f : 0.02f;
#pragma omp parallel
    {
      // Per-thread stream seeded by the tensor name and thread: deterministic for a thread count.
      std::mt19937_64 rng(std::hash<std::string>{}(name) + 7919 * omp_get_thread_num());
      std::normal_distribution<float> d(0.0f, std);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) out[i] = d(rng);
    }
    return out;
  }
};

ModelConfig make_config(const InferBenchOptions& o, bool moepp, int64_t max_pos) {
  nlohmann::json j = {{"vocab_size", o.vocab},
                      {"hidden_size", o.hidden},
                      {"intermediate_size", o.intermediate},
                      {"num_hidden_layers", o.layers},
                      {"num_attention_heads", o.heads},
                      {"num_key_value_heads", o.heads},
                      {"max_position_embeddings", max_pos},
                      {"moe_top_k", 2},
                      // The 7B checkpoint's router flags (not the released config class's defaults).
                      {"moe_2layer_gate", false},
                      {"moe_use_logits_norm", true},
                      {"moe_feature_no_mul_topk", true}};
  if (moepp) {
    j["num_experts"] = {12};
    j["moe_router"] = "moepp";
    j["n_zero_experts"] = 1;
    j["n_copy_experts"] = 1;
    j["n_constant_experts"] = 2;
  } else {
    j["num_experts"] = {8};
    j["moe_router"] = "topk";
  }
  return ModelConfig::from_json(j, "bench infer");
}

struct Result {
  double prefill_tps = 0, decode_tps = 0, zc_share = 0;
  size_t weight_bytes = 0;
};

// The share of the K slots per token and layer that did not go to an FFN expert, from the decoder's
// routing counters (what the router actually kept: its scores, the zero expert's rule, --zc-bias).
double zc_share(const DecoderScratch& sc, int64_t k) {
  return sc.moe_rows ? 1.0 - static_cast<double>(sc.ffn_slots) / static_cast<double>(sc.moe_rows * k) : 0.0;
}

Result measure(const ModelConfig& cfg, const InferWeights& w, const std::vector<int32_t>& prompt, int64_t gen,
               int reps) {
  const Decoder dec(cfg, w);
  KvCache cache = dec.make_cache(1, static_cast<int64_t>(prompt.size()) + gen);
  DecoderScratch sc;
  Tensor logits;
  Result r;
  r.weight_bytes = w.bytes();
  double best_pp = 1e30, best_tg = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    cache.clear(0);
    const double t0 = now_s();
    dec.forward(logits, cache, {{0, prompt.data(), static_cast<int64_t>(prompt.size()), false}}, sc);
    best_pp = std::min(best_pp, now_s() - t0);
    // Greedy decoding of `gen` tokens.
    const double t1 = now_s();
    for (int64_t i = 0; i < gen; ++i) {
      const int32_t next = static_cast<int32_t>(std::max_element(logits.data.begin(), logits.data.end()) - logits.data.begin());
      dec.forward(logits, cache, {{0, &next, 1, false}}, sc);
    }
    best_tg = std::min(best_tg, now_s() - t1);
    if (rep == 0) r.zc_share = zc_share(sc, cfg.moe.top_k);  // prefill and decoding
  }
  r.prefill_tps = static_cast<double>(prompt.size()) / best_pp;
  r.decode_tps = static_cast<double>(gen) / best_tg;
  return r;
}

}  // namespace

int run_infer_bench(const InferBenchOptions& o) {
  check(o.prompt >= 1 && o.gen >= 1 && o.reps >= 1, "bench infer: --prompt, --gen and --reps must be >= 1");
  check(o.zc_fraction >= 0.0 && o.zc_fraction < 1.0, "bench infer: --zc-fraction must be in [0, 1)");
  std::vector<WeightDType> dtypes;
  for (const std::string& d : split(o.dtypes)) dtypes.push_back(parse_weight_dtype(d));
  std::vector<bool> variants;
  for (const std::string& v : split(o.variants)) {
    check(v == "moe" || v == "moepp", "bench infer: unknown variant '" + v + "' (expected moe or moepp)");
    variants.push_back(v == "moepp");
  }
  std::vector<float> biases;
  for (const std::string& b : split(o.zc_biases)) {
    char* end = nullptr;
    biases.push_back(std::strtof(b.c_str(), &end));
    check(end != b.c_str() && *end == '\0', "bench infer: --zc-biases: '" + b + "' is not a number");
  }
  check(!biases.empty(), "bench infer: --zc-biases is empty");
  const int64_t max_pos = o.prompt + o.gen;
  std::mt19937 rng(1);
  std::vector<int32_t> prompt(o.prompt);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % o.vocab);

  std::map<std::string, Result> vanilla;
  nlohmann::json summary = {{"bench", "infer_summary"}};
  summary.update(bench_environment());
  for (bool moepp : variants) {
    const ModelConfig cfg = make_config(o, moepp, max_pos);
    RandomWeights src(cfg);
    src.n_ffn = cfg.moe.n_ffn();
    src.hidden = cfg.hidden;
    if (moepp) {
      // Bisection on the zero-computation router scale (F32 weights, a 64-token prompt).
      const std::vector<int32_t> probe(prompt.begin(), prompt.begin() + std::min<int64_t>(64, o.prompt));
      double lo = 0.1, hi = 10.0;
      for (int it = 0; it < 10; ++it) {
        src.zc_scale = static_cast<float>(std::sqrt(lo * hi));
        const Decoder dec(cfg, InferWeights::load(cfg, src, WeightDType::kF32));
        KvCache cache = dec.make_cache(1, static_cast<int64_t>(probe.size()));
        DecoderScratch sc;
        Tensor logits;
        dec.forward(logits, cache, {{0, probe.data(), static_cast<int64_t>(probe.size()), false}}, sc);
        const double share = zc_share(sc, cfg.moe.top_k);
        if (std::fabs(share - o.zc_fraction) < 0.01) break;
        (share < o.zc_fraction ? lo : hi) = src.zc_scale;
      }
    }
    for (WeightDType dt : dtypes) {
      for (const float zc_bias : moepp ? biases : std::vector<float>{0.0f}) {
        const std::string dn = weight_dtype_name(dt);
        ModelConfig run_cfg = cfg;
        run_cfg.set_zc_bias(zc_bias);
        const double t0 = now_s();
        const InferWeights w = InferWeights::load(run_cfg, src, dt);
        const double load_s = now_s() - t0;
        const Result r = measure(run_cfg, w, prompt, o.gen, o.reps);
        nlohmann::json j = {{"bench", "infer"},
                            {"variant", moepp ? "moepp" : "moe"},
                            {"dtype", dn},
                            {"layers", o.layers},
                            {"hidden", o.hidden},
                            {"experts", moepp ? "8 FFN + 1 zero + 1 copy + 2 constant" : "8 FFN"},
                            {"prompt_tokens", o.prompt},
                            {"gen_tokens", o.gen},
                            {"weight_bytes", r.weight_bytes},
                            {"init_s", load_s},
                            {"prefill_tokens_per_s", r.prefill_tps},
                            {"decode_tokens_per_s", r.decode_tps},
                            {"zc_slot_share", r.zc_share},
                            {"zc_bias", zc_bias},
                            {"ffn_experts_per_token", static_cast<double>(cfg.moe.top_k) * (1.0 - r.zc_share)}};
        j.update(bench_environment());
        if (!moepp) {
          vanilla[dn] = r;
        } else if (vanilla.count(dn)) {
          j["prefill_speedup_vs_moe"] = r.prefill_tps / vanilla[dn].prefill_tps;
          j["decode_speedup_vs_moe"] = r.decode_tps / vanilla[dn].decode_tps;
        }
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
        const std::string key = std::string(moepp ? "moepp_" : "moe_") + dn +
                                (zc_bias != 0.0f ? "_zcbias" + std::to_string(zc_bias) : std::string());
        summary[key] = {{"pp", r.prefill_tps}, {"tg", r.decode_tps}};
      }
    }
  }
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

}  // namespace moepp
