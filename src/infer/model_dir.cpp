// Opening a model directory for inference (see model_dir.h).
#include "infer/model_dir.h"

#include <cstdio>
#include <filesystem>
#include <memory>

#include "comm/agreement.h"
#include "core/error.h"
#include "core/fnv1a.h"
#include "infer/infer_weights.h"
#include "model/checkpoint.h"
#include "io/file.h"
#include "io/weight_source.h"

namespace moepp {

ModelDir open_model_dir(const std::string& path, const std::string& tokenizer, const std::string& who) {
  namespace fs = std::filesystem;
  check(fs::is_directory(path), who + ": --model " + path + ": no such directory");
  ModelDir m;
  m.dir = resolve_model_dir(path);
  check(fs::is_directory(m.dir), who + ": " + path + ": its latest checkpoint " + m.dir + " does not exist");
  m.cfg = load_model_config(m.dir);
  const std::string tok_path = tokenizer.empty() ? (fs::path(m.dir) / "tokenizer.model").string() : tokenizer;
  check(fs::exists(tok_path), who + ": " + tok_path + " not found" + (tokenizer.empty() ? " (pass --tokenizer)" : ""));
  m.tok.load(tok_path);
  check(m.tok.vocab_size() <= m.cfg.vocab, who + ": " + tok_path + " has " + std::to_string(m.tok.vocab_size()) +
                                               " pieces, more than the model's vocab_size " +
                                               std::to_string(m.cfg.vocab));
  check(m.cfg.bos >= 0 && m.cfg.bos < m.cfg.vocab, who + ": " + m.dir + "/config.json: bos_token_id " +
                                                       std::to_string(m.cfg.bos) + " is outside the vocabulary");
  return m;
}

Decoder load_decoder(const ModelDir& m, WeightDType dtype, Comm* expert_group, std::optional<KvDType> kv_dtype,
                     bool packed_prefill) {
  check(!packed_prefill || dtype == WeightDType::kBF16,
        std::string("--packed-prefill keeps a packed copy of BF16 weights: it needs --dtype bf16, not ") +
            weight_dtype_name(dtype));
  ExpertShard shard;
  if (expert_group) {
    const std::string config_path = (std::filesystem::path(m.dir) / "config.json").string();
    Fnv1a64 config_hash;
    config_hash.add(io::read_file(config_path, "the model's config.json"));
    check_same_on_every_rank(*expert_group, config_hash.value(), m.dir + "/config.json (FNV-1a 64 of its bytes)");
    shard = {expert_group->rank(), expert_group->size()};
    for (int64_t l = 0; l < m.cfg.n_layers; ++l) {
      const int64_t n_ffn = m.cfg.layer_moe(static_cast<int>(l), false).n_ffn();
      if (n_ffn % shard.count != 0)
        throw JobWideError("--ep-size " + std::to_string(shard.count) + " does not divide layer " + std::to_string(l) +
                           "'s " + std::to_string(n_ffn) + " FFN experts (" + m.dir +
                           "): each rank must hold the same number of experts");
    }
  }
  std::shared_ptr<const io::WeightSource> src = io::open_weights(m.dir);
  InferWeights w = InferWeights::load(m.cfg, std::move(src), dtype, shard);
  if (expert_group)
    check_same_on_every_rank(*expert_group, w.dense_hash(),
                             "the dense weights (all but the FFN experts) of " + m.dir + " as " +
                                 weight_dtype_name(dtype));
  if (packed_prefill && w.pack_bf16_for_many_rows() == 0)
    std::fprintf(stderr, "moepp: note: --packed-prefill has no effect here: oneDNN runs no native bf16 products on "
                         "this CPU (or MOEPP_BF16_GEMM=0), so many-row products stay in fp32\n");
  const KvDType kv = kv_dtype.value_or(default_kv_dtype(dtype));
  if (expert_group)
    check_same_on_every_rank(*expert_group, static_cast<uint64_t>(kv), std::string("the KV cache dtype (") + kv_dtype_name(kv) + ")");
  return Decoder(m.cfg, std::move(w), expert_group, kv);
}

}  // namespace moepp
