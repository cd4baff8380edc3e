// `moepp convert --model DIR --out DIR [--dtype f32|bf16|int8|q4]`: rewrites a checkpoint in any format
// that io/weight_source.h reads (safetensors single/sharded, PyTorch .bin single/sharded) as
// OUT/config.json + OUT/model.safetensors (+ OUT/tokenizer.model when DIR has one). Tensors are read
// one at a time; floating tensors are written as F32 or BF16 (round to nearest even), integer tensors
// unchanged; with int8 or q4 the decoder's large matrices are quantised as inference holds them
// (infer/infer_weights.h: used in place from the memory map at load) and the other tensors stay F32. The output directory appears whole (written as OUT.partial-<pid>, then renamed) or not at
// all. See docs/checkpoints.md.
// `moepp convert --to gguf --model DIR --out FILE.gguf [--dtype f32|bf16]` writes a vanilla model as a
// llama-architecture GGUF file for llama.cpp instead (model/gguf_export.h), with the checkpoint's
// tokenizer.model as its SentencePiece vocabulary (a synthetic one, with a note, when DIR has none);
// MoE++ models are refused with the config key at fault.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/fault_point.h"
#include "core/half_float.h"
#include "core/tensor.h"
#include "io/file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/weight_source.h"
#include "model/ignored_buffers.h"
#include "model/model_config.h"
#include "model/gguf_export.h"
#include "model/model_params.h"
#include "infer/infer_weights.h"
#include "tokenizer/tokenizer.h"

namespace moepp::cli {
namespace {

namespace fs = std::filesystem;

struct ConvertArgs {
  std::string model, out, dtype = "f32", to = "safetensors";
};

// The GGUF vocabulary of a SentencePiece model (tokenizer.ggml.*, model "llama").
GgufVocab gguf_vocab_of(const Tokenizer& tok) {
  GgufVocab v;
  const int32_t n = tok.vocab_size();
  for (int32_t id = 0; id < n; ++id) {
    const Tokenizer::PieceInfo p = tok.piece_info(id);
    v.tokens.push_back(p.piece);
    v.scores.push_back(p.score);
    switch (p.kind) {
      case Tokenizer::PieceKind::kNormal: v.types.push_back(GgufVocab::kNormal); break;
      case Tokenizer::PieceKind::kUnknown: v.types.push_back(GgufVocab::kUnknown); break;
      case Tokenizer::PieceKind::kControl: v.types.push_back(GgufVocab::kControl); break;
      case Tokenizer::PieceKind::kByte: v.types.push_back(GgufVocab::kByte); break;
      case Tokenizer::PieceKind::kUnused: v.types.push_back(GgufVocab::kUnused); break;
    }
  }
  v.bos = tok.bos_id();
  v.eos = tok.eos_id();
  v.unk = tok.unk_id();
  v.pad = tok.pad_id();
  return v;
}

void run_convert_gguf(const ConvertArgs& a) {
  check(a.dtype == "f32" || a.dtype == "bf16", "--dtype " + a.dtype + ": --to gguf writes f32 or bf16");
  const fs::path in_dir(a.model);
  const std::string config_path = (in_dir / "config.json").string();
  const ModelConfig cfg = ModelConfig::from_json(io::read_json_file(config_path, "the model config"), config_path);
  check_llama_gguf_compatible(cfg, config_path);
  const std::unique_ptr<io::WeightSource> src = io::open_weights(a.model);
  std::error_code ec;
  GgufVocab vocab;
  const fs::path tok_path = in_dir / "tokenizer.model";
  if (fs::is_regular_file(tok_path, ec)) {
    vocab = gguf_vocab_of(Tokenizer(tok_path.string()));
  } else {
    vocab = synthetic_gguf_vocab(cfg);
    std::fprintf(stderr, "moepp: note: %s has no tokenizer.model; the GGUF gets a synthetic vocabulary (byte pieces and "
                 "placeholders): feed it token ids, not text\n", a.model.c_str());
  }
  const fs::path out(a.out);
  if (out.has_parent_path()) {
    fs::create_directories(out.parent_path(), ec);
    if (ec) throw Error("convert: cannot create directory " + out.parent_path().string() + ": " + ec.message());
  }
  const std::string name = fs::path(a.model).filename().empty() ? fs::path(a.model).parent_path().filename().string()
                                                                  : fs::path(a.model).filename().string();
  const uint64_t bytes =
      write_llama_gguf(a.out, cfg, *src, a.dtype == "f32" ? GgufFloat::kF32 : GgufFloat::kBF16, vocab, name);
  std::printf("converted %s to %s (GGUF, llama architecture, %s, %.1f MB)\n", src->source().c_str(), a.out.c_str(),
              a.dtype == "f32" ? "F32" : "BF16", static_cast<double>(bytes) / 1e6);
}

// The converted checkpoint's files, written into `dir`.
void write_converted(const fs::path& dir, const ConvertArgs& a, const io::WeightSource& src, nlohmann::json config,
                     const ModelConfig& cfg) {
  const bool bf16 = a.dtype == "bf16";
  const bool quantise = a.dtype == "int8" || a.dtype == "q4";
  std::set<std::string> matrices;  // the tensors quantised
  if (quantise)
    for (const ParamSpec& spec : param_specs(cfg))
      if (is_weight_matrix(spec)) matrices.insert(spec.name);
  const fs::path in_dir(a.model);
  std::error_code ec;
  io::SafetensorsWriter w;
  std::vector<std::string> names;
  size_t skipped = 0;
  for (const std::string& name : src.names()) {
    if (is_ignored_rotary_buffer(name)) {
      ++skipped;
      continue;
    }
    names.push_back(name);
  }
  if (skipped > 0)
    std::fprintf(stderr, "moepp: note: %s: skipped %zu rotary-embedding buffer%s (not parameters; not written)\n",
                 src.source().c_str(), skipped, skipped == 1 ? "" : "s");
  // Every tensor is made when the writer reaches it (SafetensorsWriter::add_lazy): read from the source,
  // converted, written, dropped; the whole output is never in memory.
  for (const std::string& name : names) {
    const io::WeightInfo info = src.info(name);
    if (info.dtype == io::DType::kF32 || info.dtype == io::DType::kF16 || info.dtype == io::DType::kBF16) {
      const std::vector<int64_t> shape = info.shape;
      auto read = [&src, name, shape] {
        Tensor t(shape);
        src.read_f32(name, t.ptr());
        return t;
      };
      const size_t n = Tensor::numel_of(shape);
      if (matrices.count(name) && shape.size() == 2) {
        const WeightDType d = parse_weight_dtype(a.dtype);
        add_stored_matrix(w, name, shape[0], shape[1], d, [read, shape, d] {
          const Tensor t = read();
          return WeightMatrix::from_f32(t.ptr(), shape[0], shape[1], d);
        });
      } else if (bf16) {
        w.add_lazy(name, io::DType::kBF16, shape, [read, n](uint8_t* out) {
          const Tensor t = read();
          auto* h = reinterpret_cast<uint16_t*>(out);
          for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16(t.data[i]);
        });
      } else {
        w.add_lazy(name, io::DType::kF32, shape, [read, n](uint8_t* out) {
          const Tensor t = read();
          std::memcpy(out, t.data.data(), n * sizeof(float));
        });
      }
    } else {  // integer tensors (I32, I64) pass through unchanged, from the mapping
      const uint8_t* p = src.mapped(name);
      if (!p)
        throw Error(src.source() + ": tensor '" + name + "' (" + io::dtype_name(info.dtype) +
                    ") is not contiguous; integer tensors are only copied when contiguous");
      const size_t nb = Tensor::numel_of(info.shape) * io::dtype_size(info.dtype);
      w.add_lazy(name, info.dtype, info.shape, [p, nb](uint8_t* out) { std::memcpy(out, p, nb); });
    }
  }
  w.set_metadata("format", "pt");
  if (quantise) w.set_metadata("moepp_weight_dtype", a.dtype);
  const fs::path weights = dir / "model.safetensors";
  w.write(weights.string());
  fault_point("convert:weights");

  // The source's config with every key moepp reads spelled out (a key the source left out takes its
  // default explicitly, so the converted model means the same under any later change of defaults).
  const nlohmann::json full = cfg.to_json();
  for (auto it = full.begin(); it != full.end(); ++it)
    if (!config.contains(it.key())) config[it.key()] = it.value();
  config["torch_dtype"] = bf16 ? "bfloat16" : "float32";  // what model.safetensors' floating tensors hold
  if (quantise) config["moepp_weight_dtype"] = a.dtype;    // its large matrices (docs/checkpoints.md)
  const std::string text = config.dump(2) + "\n";
  io::write_file_atomic((dir / "config.json").string(), text);
  bool tokenizer = false;
  if (fs::is_regular_file(in_dir / "tokenizer.model", ec)) {
    const std::string tok = io::read_file((in_dir / "tokenizer.model").string(), "the tokenizer model");
    io::write_file_atomic((dir / "tokenizer.model").string(), tok);
    tokenizer = true;
  }
  std::printf("converted %zu tensors (%.1f MB, %s) from %s to %s%s\n", names.size(), static_cast<double>(w.data_bytes()) / 1e6,
              quantise ? (a.dtype == "q4" ? "Q4 matrices, F32 rest" : "INT8 matrices, F32 rest") : bf16 ? "BF16" : "F32",
              src.source().c_str(), (fs::path(a.out) / "model.safetensors").string().c_str(),
              tokenizer ? " (+ config.json, tokenizer.model)" : " (+ config.json)");
}

void run_convert(const ConvertArgs& a) {
  check(a.to == "safetensors" || a.to == "gguf", "--to " + a.to + ": expected safetensors or gguf");
  if (a.to == "gguf") return run_convert_gguf(a);
  check(a.dtype == "f32" || a.dtype == "bf16" || a.dtype == "int8" || a.dtype == "q4",
        "--dtype " + a.dtype + ": expected f32, bf16, int8 or q4");
  const fs::path in_dir(a.model), out_dir(a.out);
  const std::string config_path = (in_dir / "config.json").string();
  nlohmann::json config = io::read_json_file(config_path, "the model config");
  // The config must be one this engine runs (errors name the field).
  const ModelConfig cfg = ModelConfig::from_json(config, config_path);
  const std::unique_ptr<io::WeightSource> src = io::open_weights(a.model);

  // The output appears whole or not at all: it is written into a sibling OUT.partial-<pid> and renamed
  // to OUT at the end, so --out must not hold anything yet.
  std::error_code ec;
  if (fs::exists(out_dir, ec)) {
    if (fs::equivalent(in_dir, out_dir, ec))
      throw Error("convert: --out " + a.out + " is the --model directory; choose another");
    if (!fs::is_directory(out_dir, ec) || !fs::is_empty(out_dir, ec))
      throw Error("convert: --out " + a.out + " exists and is not an empty directory; choose a new one");
  }
  const fs::path parent = out_dir.has_parent_path() ? out_dir.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec) throw Error("convert: cannot create directory " + parent.string() + ": " + ec.message());
  const std::string stem = out_dir.filename().string() + ".partial-";
  for (const auto& e : fs::directory_iterator(parent))  // left by an interrupted convert
    if (e.path().filename().string().rfind(stem, 0) == 0) fs::remove_all(e.path(), ec);
  const fs::path partial = parent / (stem + std::to_string(::getpid()));
  fs::create_directories(partial, ec);
  if (ec) throw Error("convert: cannot create directory " + partial.string() + ": " + ec.message());
  try {
    write_converted(partial, a, *src, config, cfg);
  } catch (const std::exception& e) {
    fs::remove_all(partial, ec);
    throw Error(std::string(e.what()) + " (convert: nothing was written to " + a.out + ")");
  }
  if (fs::exists(out_dir, ec)) fs::remove(out_dir, ec);  // the empty directory
  fs::rename(partial, out_dir);
  io::sync_directory(parent.string());
}

}  // namespace

void register_convert_command(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* sub = app.add_subcommand(
      "convert",
      "Convert a checkpoint (safetensors or PyTorch .bin, single or sharded) to config.json + model.safetensors");
  sub->add_option("--model", args->model, "checkpoint directory (config.json + weights in any supported format)")
      ->required();
  sub->add_option("--out", args->out, "output directory (created if needed); with --to gguf, the .gguf file")->required();
  sub->add_option("--to", args->to, "output format: safetensors (a checkpoint directory) or gguf (llama.cpp; vanilla models)")
      ->capture_default_str();
  sub->add_option("--dtype", args->dtype, "dtype written: f32 or bf16 (every floating tensor), int8 or q4 (the large matrices, for inference)")->capture_default_str();
  sub->callback([args] { run_convert(*args); });
}

}  // namespace moepp::cli
