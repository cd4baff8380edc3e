// A model directory opened for inference, the one way the commands (generate, serve, eval, analyze)
// open a --model argument: the checkpoint directory (a training run directory resolves to its latest
// checkpoint), its validated config.json and its tokenizer. The weights are loaded separately, after
// the caller has checked its request against the config (a bad prompt fails before gigabytes load).
#pragma once

#include <optional>
#include <string>

#include "comm/comm.h"
#include "infer/decoder.h"
#include "infer/weight_matrix.h"
#include "model/model_config.h"
#include "tokenizer/tokenizer.h"

namespace moepp {

struct ModelDir {
  std::string dir;  // the checkpoint directory
  ModelConfig cfg;
  Tokenizer tok;
};

// Opens `path` (a checkpoint directory or a run directory). tokenizer: a SentencePiece model to use
// instead of the checkpoint's tokenizer.model ("" = the checkpoint's). Throws moepp::Error, prefixed
// with `who` (the command, e.g. "generate"), when the directory, its config.json or the tokenizer is
// missing or invalid, when the tokenizer has more pieces than the model's vocab_size, or when
// bos_token_id is outside the vocabulary.
ModelDir open_model_dir(const std::string& path, const std::string& tokenizer, const std::string& who);

// The KV-cache decoder with m's weights (model.safetensors, its shards or pytorch_model.bin) in dtype.
// BF16 safetensors loaded as bf16 are used in place through the file's memory mapping.
// expert_group (not null): expert-parallel inference over its ranks (decoder.h). Collective: every
// rank loads the dense weights and only its shard of the FFN experts, and the ranks compare an FNV-1a
// hash of config.json and of the dense weights. JobWideError (on every rank) when the group's size
// does not divide a layer's FFN expert count or when the hashes differ (naming the ranks).
// kv_dtype: the decoder's KV cache dtype (default_kv_dtype(dtype) when not given; the same on every
// rank of the group, checked).
// packed_prefill (--packed-prefill): BF16 weights also kept packed for the products of many rows
// (InferWeights::pack_bf16_for_many_rows: faster prefill and evaluation, twice the weight memory);
// moepp::Error before anything is loaded when dtype is not BF16; a note on stderr where the CPU has no
// native bf16 products (the weights then stay as they are).
Decoder load_decoder(const ModelDir& m, WeightDType dtype, Comm* expert_group = nullptr,
                     std::optional<KvDType> kv_dtype = std::nullopt, bool packed_prefill = false);

}  // namespace moepp
