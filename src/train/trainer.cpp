// The training loop, run preparation, checkpoints and resume (see trainer.h).
#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "comm/agreement.h"
#include "comm/local_comm.h"
#include "core/error.h"
#include "core/fnv1a.h"
#include "core/fault_point.h"
#include "data/token_shards.h"
#include "io/file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/weight_source.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/model_state.h"
#include "moe/balance_loss.h"
#include "tokenizer/tokenizer.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"
#include "train/train_parallel.h"

namespace fs = std::filesystem;

namespace moepp {
namespace {

// Tokenizer and shards of a run directory, made once.
struct RunData {
  Tokenizer tok;
  data::TokenShard train, valid;
  double valid_bytes_per_token = 0.0;
};

void tokenize_to_shard(const Tokenizer& tok, const std::string& text_path, const std::string& shard_path,
                       uint64_t& n_bytes) {
  const std::vector<std::string> docs = data::read_text_documents(text_path);
  check(!docs.empty(), text_path + ": no documents (documents are separated by blank lines)");
  data::TokenShardWriter w(shard_path, static_cast<uint32_t>(tok.vocab_size()), tok.bos_id(), tok.eos_id(),
                           data::kShardFlagBos | data::kShardFlagEos);
  n_bytes = 0;
  for (const std::string& d : docs) {
    w.add_document(tok.encode(d));
    n_bytes += d.size();
  }
  w.finish();
}

RunData prepare_data(const TrainConfig& cfg, const std::string& out, bool quiet) {
  fs::create_directories(fs::path(out) / "data");
  const std::string tok_path = (fs::path(out) / "tokenizer.model").string();
  if (!fs::exists(tok_path)) {
    if (!quiet) std::fprintf(stderr, "moepp train: training a %d-piece BPE tokenizer on %s\n", cfg.tokenizer_vocab, cfg.train_text.c_str());
    train_tokenizer({cfg.train_text}, tok_path, cfg.tokenizer_vocab);
  }
  Tokenizer tok(tok_path);
  const std::string meta_path = (fs::path(out) / "data" / "meta.json").string();
  const std::string train_bin = (fs::path(out) / "data" / "train.bin").string();
  const std::string valid_bin = (fs::path(out) / "data" / "valid.bin").string();
  if (!fs::exists(meta_path)) {
    if (!quiet) std::fprintf(stderr, "moepp train: tokenizing %s and %s\n", cfg.train_text.c_str(), cfg.valid_text.c_str());
    uint64_t train_bytes = 0, valid_bytes = 0;
    tokenize_to_shard(tok, cfg.train_text, train_bin, train_bytes);
    check(!cfg.valid_text.empty(), "training config: field 'valid_text' is required");
    tokenize_to_shard(tok, cfg.valid_text, valid_bin, valid_bytes);
    const nlohmann::json meta = {{"train_text", cfg.train_text}, {"valid_text", cfg.valid_text},
                                 {"train_bytes", train_bytes},   {"valid_bytes", valid_bytes}};
    io::write_file_atomic(meta_path, meta.dump(2) + "\n");
  }
  const nlohmann::json meta = io::read_json_file(meta_path);
  RunData d{std::move(tok), data::TokenShard(train_bin), data::TokenShard(valid_bin), 0.0};
  d.valid_bytes_per_token = meta.at("valid_bytes").get<double>() / static_cast<double>(d.valid.size());
  return d;
}

// The parameters this process holds (every dense one, its FFN experts), in checkpoint order, and which
// of them are FFN experts.
struct HeldParams {
  std::vector<ParamRef> refs;
  std::vector<bool> expert;
};

HeldParams held_params(const ModelConfig& mc, ModelParams& p, ModelParams& g, ExpertShard shard) {
  HeldParams h;
  for (const ParamSpec& spec : param_specs(mc)) {
    if (!shard_holds(mc, spec, shard)) continue;
    h.refs.push_back({spec.name, p.slot(spec), g.slot(spec)});
    h.expert.push_back(is_ffn_expert(spec));
  }
  return h;
}

// Writes this rank's optimizer shard: AdamW's moments of the parameters shard_of gives it (every one in
// one process: optimizer.safetensors), and for count > 1 (shard 0) the index naming each moment's file.
void save_optimizer_shard(const std::string& dir, const ModelConfig& mc, AdamW& opt, ExpertShard shard) {
  std::map<std::string, size_t> at;  // the optimizer's index of each parameter
  for (size_t i = 0; i < opt.params().size(); ++i) at[opt.params()[i].name] = i;
  io::SafetensorsWriter w;
  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  for (const ParamSpec& spec : param_specs(mc)) {
    const int in = shard_of(mc, spec, shard.count);
    const std::string file = shard.count == 1 ? "optimizer.safetensors" : io::shard_file_name("optimizer", in, shard.count);
    weight_map["m." + spec.name] = weight_map["v." + spec.name] = file;
    total += 2 * static_cast<uint64_t>(Tensor::numel_of(spec.shape)) * 4;
    if (in != shard.index) continue;
    const auto it = at.find(spec.name);
    check(it != at.end(), "optimizer: this process does not hold '" + spec.name + "'");
    w.add_f32_ref("m." + spec.name, opt.m()[it->second]);  // the moments are not copied
    w.add_f32_ref("v." + spec.name, opt.v()[it->second]);
  }
  w.set_metadata("step", std::to_string(opt.steps()));
  const std::string file = shard.count == 1 ? "optimizer.safetensors" : io::shard_file_name("optimizer", shard.index, shard.count);
  w.write((fs::path(dir) / file).string());
  if (shard.count > 1 && shard.index == 0)
    io::write_safetensors_index((fs::path(dir) / "optimizer.safetensors.index.json").string(), weight_map, total);
}

// A checkpoint is written whole into a temporary directory, renamed to checkpoint-<step>, and only
// then named by `latest` (atomically); older checkpoints go after that. A crash at any point leaves
// `latest` naming a complete checkpoint; a failed write (a full disk) removes the temporary
// directory and throws, keeping the previous checkpoint. The fault points are the crash tests'.
// Under mpirun every rank calls it: the writers of the shards write their files into the temporary
// directory, the ranks agree that every write succeeded, and rank 0 completes the checkpoint.
void save_checkpoint(const std::string& out, int64_t step, const ModelConfig& mc, const ModelParams& p, AdamW& opt,
                     const TrainConfig& cfg, bool adaptive_l1, TrainParallel& par) {
  const bool lead = par.rank() == 0;
  const fs::path final_dir = fs::path(out) / ("checkpoint-" + std::to_string(step));
  const fs::path tmp = fs::path(out) / (".checkpoint-tmp-" + std::to_string(step));
  const std::string failed = "checkpoint of step " + std::to_string(step) + " not written (the previous one is kept): ";
  if (lead) {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  all_ranks_ok(par.world(), true);  // the directory exists before anyone writes into it
  std::string error;
  try {
    if (par.writes_shard()) {
      save_model_shard(tmp.string(), mc, p, par.shard());
      fault_point("checkpoint:model");
      save_optimizer_shard(tmp.string(), mc, opt, par.shard());
      fault_point("checkpoint:optimizer");
    }
    if (lead) {
      save_model_index(tmp.string(), mc, par.ep_size());
      fs::copy_file(fs::path(out) / "tokenizer.model", tmp / "tokenizer.model");
      nlohmann::json state = {{"step", step},
                              {"optimizer_steps", opt.steps()},
                              {"train_config", cfg.to_json()},
                              {"ranks", par.size()},
                              {"ep_size", par.ep_size()}};
      if (adaptive_l1) state["relu_l1_coef"] = mc.moe.relu_l1_coef;  // the value for the next step
      io::write_file_atomic((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
      fault_point("checkpoint:state");
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!all_ranks_ok(par.world(), error.empty())) {
    if (lead) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
    if (!par.distributed()) throw Error(failed + error);
    throw JobWideError(failed + (error.empty() ? "a write failed on another rank" : error));
  }
  if (lead) {
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    fault_point("checkpoint:renamed");
    io::write_file_atomic((fs::path(out) / "latest").string(), final_dir.filename().string() + "\n");
    fault_point("checkpoint:latest");
    // Older checkpoints are removed only once `latest` names the new one.
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("checkpoint-", 0) == 0 && e.path() != final_dir) fs::remove_all(e.path());
    }
  }
  all_ranks_ok(par.world(), true);  // nobody goes on (to a resume test, a next checkpoint) before it is complete
}

// Keeps the log lines of steps <= step (and evals at or before it): the resumed run appends the rest.
void truncate_log(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream f(path);
  std::string line, kept;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
      break;  // a line cut by a kill (or otherwise not a record of ours)
    }
  }
  io::write_file_atomic(path, kept);
}

// The mean validation loss over cfg.eval_batches sequential batches; under mpirun each rank runs its
// rows of every batch (the model's CE parts sum to the batch's mean).
float evaluate(const Model& model, const ModelParams& p, const data::TokenShard& valid, const TrainConfig& cfg,
               ModelState& st, TrainParallel& par) {
  const int64_t T = std::min<int64_t>(cfg.seq_len, static_cast<int64_t>(valid.size()) - 1);
  check(T >= 1, valid.path() + ": the validation shard is too small");
  data::BatchSampler s(valid, cfg.batch_size, T, cfg.seed, data::BatchSampler::Mode::kSequential);
  const int64_t batches = std::min<int64_t>(cfg.eval_batches,
                                            std::max<int64_t>(1, static_cast<int64_t>(s.num_windows()) / cfg.batch_size));
  double sum = 0.0;
  for (int64_t b = 0; b < batches; ++b) {
    const data::TokenBatch tb = s.batch_at(static_cast<uint64_t>(b));
    const int64_t b0 = par.batch_begin(tb.batch), b1 = par.batch_end(tb.batch);
    sum += model.forward(st, tb.inputs.data() + b0 * tb.seq_len, tb.targets.data() + b0 * tb.seq_len, b1 - b0,
                         tb.seq_len, p, false);
  }
  par.world().allreduce_sum(&sum, 1);
  return static_cast<float>(sum / static_cast<double>(batches));
}

std::string fmt_duration(double s) {
  char buf[32];
  const int m = static_cast<int>(s) / 60, sec = static_cast<int>(s) % 60;
  std::snprintf(buf, sizeof buf, "%dm%02ds", m, sec);
  return buf;
}

void progress(int64_t step, int64_t total, float loss, float lr, double tps, double eta_s) {
  const int width = 24;
  const int filled = static_cast<int>(width * static_cast<double>(step) / static_cast<double>(total));
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %s   ", bar.c_str(),
               static_cast<long long>(step), static_cast<long long>(total), loss, lr, tps, fmt_duration(eta_s).c_str());
  std::fflush(stderr);
}

// The run's model config: its JSON with the tokenizer's vocabulary and special ids.
ModelConfig run_model_config(const TrainConfig& cfg, const RunData& data) {
  nlohmann::json mj = cfg.model;
  mj["vocab_size"] = data.tok.vocab_size();
  mj["bos_token_id"] = data.tok.bos_id();
  mj["eos_token_id"] = data.tok.eos_id();
  mj["pad_token_id"] = data.tok.pad_id();
  if (!mj.contains("max_position_embeddings")) mj["max_position_embeddings"] = cfg.seq_len;
  ModelConfig mc = ModelConfig::from_json(mj, "training config field 'model'");
  check(cfg.seq_len <= mc.max_pos, "training config: seq_len exceeds the model's max_position_embeddings");
  check(static_cast<int64_t>(data.train.size()) > cfg.seq_len + 1, data.train.path() + ": fewer tokens than seq_len + 1");
  return mc;
}

// The model being trained and its optimizer. The optimizer points into params and grads, so a Run
// stays where it is made.
// Under mpirun it holds this rank's shard (the dense tensors and its FFN experts).
struct Run {
  Run(ModelConfig c, ExpertShard s)
      : mc(std::move(c)), shard(s), grads(ModelParams::zeros(mc)), adaptive_l1(mc.moe.router == RouterKind::kRelu) {
    keep_shard(grads, mc, shard);
  }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // The optimizer over the held parameters (grads must have the params' shapes).
  void make_optimizer(const AdamWConfig& ac) {
    held = held_params(mc, params, grads, shard);
    adam = std::make_unique<AdamW>(held.refs, ac);
  }

  ModelConfig mc;
  ExpertShard shard;
  ModelParams params, grads;
  HeldParams held;
  std::unique_ptr<AdamW> adam;
  int64_t start_step = 0;
  // ReMoE (relu router): lambda starts at moe_relu_l1_coef and is multiplied or divided by 1.2 after
  // every step to hold the mean sparsity over the layers at relu_target_sparsity() (1 - K/E, or
  // 1 - moe_relu_target_experts/E; one lambda for all layers).
  bool adaptive_l1;
};

// Refuses a checkpoint (in dir, with config saved) whose model is not the run's model `mc` (ReMoE's
// lambda is the one key that moves during training; it is restored separately).
void check_same_model(const std::string& dir, ModelConfig saved, const ModelConfig& mc, bool adaptive_l1) {
  if (adaptive_l1) saved.moe.relu_l1_coef = mc.moe.relu_l1_coef;
  const std::vector<std::string> diff = saved.differences(mc);
  if (diff.empty()) return;
  std::string keys;
  for (const std::string& d : diff) keys += (keys.empty() ? "" : ", ") + d;
  throw Error(dir + "/config.json: the checkpoint's model differs from the training config's 'model' in " + keys +
              " (checkpoint vs run); resume with the config that trained it, or start a new run");
}

// Reads AdamW's moments of the held parameters from dir's optimizer.safetensors (or its shards, through
// optimizer.safetensors.index.json, whatever their number).
void load_optimizer_state(AdamW& adam, const std::string& dir) {
  const fs::path one = fs::path(dir) / "optimizer.safetensors";
  const std::unique_ptr<io::WeightSource> of =
      io::open_weights((fs::exists(one) ? one : fs::path(dir) / "optimizer.safetensors.index.json").string());
  for (size_t i = 0; i < adam.params().size(); ++i) {
    const std::string& name = adam.params()[i].name;
    const std::vector<int64_t>& shape = adam.params()[i].value->shape;
    for (const char* moment : {"m.", "v."}) {
      const io::WeightInfo info = of->info(moment + name);
      check(info.shape == shape && info.dtype == io::DType::kF32,
            of->source() + ": optimizer state '" + moment + name + "' has the wrong shape or dtype");
      Tensor& t = moment[0] == 'm' ? adam.m()[i] : adam.v()[i];
      t = Tensor(shape);
      of->read_f32(moment + name, t.ptr());
    }
  }
}

// ReMoE's lambda for the next step, from a checkpoint's trainer_state.json (`state`, read from dir).
float saved_relu_l1_coef(const nlohmann::json& state, const std::string& dir) {
  const std::string sp = (fs::path(dir) / "trainer_state.json").string();
  check(state.contains("relu_l1_coef") && state["relu_l1_coef"].is_number(),
        sp + ": field 'relu_l1_coef' (ReMoE's current lambda) is missing or not a number");
  const double l1 = state["relu_l1_coef"].get<double>();
  check(std::isfinite(l1) && l1 >= 0.0, sp + ": field 'relu_l1_coef' must be finite and >= 0");
  return static_cast<float>(l1);
}

// Continues the run from out_dir/latest: model, optimizer, step and ReMoE's lambda; the log is cut
// back to that step.
// Any rank count and expert-parallel size may resume a checkpoint of any other: each rank reads its
// shard of the model and of the optimizer state.
void resume_run(Run& run, const AdamWConfig& ac, const TrainOptions& opt, const std::string& log_path, bool lead) {
  const std::string dir = resolve_model_dir(opt.out_dir);
  check_same_model(dir, load_model_config(dir), run.mc, run.adaptive_l1);  // before anything else
  run.params = load_model(dir, run.shard).second;
  const nlohmann::json state = io::read_json_file((fs::path(dir) / "trainer_state.json").string());
  run.start_step = state.at("step").get<int64_t>();
  run.make_optimizer(ac);
  load_optimizer_state(*run.adam, dir);
  run.adam->set_steps(state.at("optimizer_steps").get<int64_t>());
  if (run.adaptive_l1) run.mc.moe.relu_l1_coef = saved_relu_l1_coef(state, dir);
  if (lead) truncate_log(log_path, run.start_step);
  if (!opt.quiet && lead)
    std::fprintf(stderr, "moepp train: resuming from %s at step %lld\n", dir.c_str(),
                 static_cast<long long>(run.start_step));
}

// Starts the run at step 0: random weights, a fresh optimizer, the run's config and an empty log.
// Every rank draws the whole model (the random stream runs through all tensors in order) and keeps its
// shard, so that any rank count starts from the same weights.
void start_fresh(Run& run, const AdamWConfig& ac, const TrainConfig& cfg, const TrainOptions& opt,
                 const std::string& log_path, bool lead) {
  if (opt.resume && !opt.quiet && lead)
    std::fprintf(stderr, "moepp train: nothing to resume in %s, starting fresh\n", opt.out_dir.c_str());
  run.params = ModelParams::zeros(run.mc);
  run.params.init_random(run.mc, cfg.seed, cfg.init_std);
  keep_shard(run.params, run.mc, run.shard);
  run.make_optimizer(ac);
  if (!lead) return;
  io::write_file_atomic((fs::path(opt.out_dir) / "train_config.json").string(), cfg.to_json().dump(2) + "\n");
  io::write_file_atomic(log_path, "");
}

// What one expert-parallel exchange of a layer moved in a step, summed over its micro-batches and the
// ranks (rows to other ranks; bytes = rows x D x 4), and the seconds spent in it (mean over the ranks).
struct LayerExchange {
  double fwd_rows_out = 0, fwd_rows_in = 0, bwd_rows_out = 0, bwd_rows_in = 0, comm_s = 0;
};

// What one optimizer step measured, as means over its micro-batches (and over the whole batch under
// mpirun).
struct StepStats {
  double loss = 0.0, aux = 0.0;
  std::vector<double> ffn;  // [layers] FFN experts per token
  double sparsity = 0.0;    // ReMoE: mean over the layers
  float gnorm = 0.0f, lr = 0.0f;
  double dt = 0.0;  // seconds
  std::vector<LayerExchange> exchange;  // [layers] with expert parallelism, else empty
  double grad_sync_s = 0.0;             // summing the gradients over the ranks (mean over the ranks)
};

// One optimizer step: forward/backward of cfg.grad_accum micro-batches (this rank's rows of each),
// the gradients summed over the ranks and averaged over the micro-batches, clip, AdamW.
StepStats train_step(Run& run, const Model& model, const data::BatchSampler& sampler, ModelState& st,
                     const LrSchedule& sched, const TrainConfig& cfg, int64_t step, TrainParallel& par) {
  const ModelConfig& mc = run.mc;
  const int64_t L = mc.n_layers;
  const auto t0 = std::chrono::steady_clock::now();
  run.grads.zero();
  // Sums over the micro-batches, to be summed over the ranks in one call: [loss, sparsity x tokens,
  // tokens, ffn rows per layer, exchange counters per layer (5 each), grad sync seconds].
  std::vector<double> sums(3 + L + 5 * L + 1, 0.0);
  double aux = 0.0;
  for (int64_t micro = 0; micro < cfg.grad_accum; ++micro) {
    const data::TokenBatch b = sampler.batch_at(static_cast<uint64_t>(step * cfg.grad_accum + micro));
    const int64_t b0 = par.batch_begin(b.batch), b1 = par.batch_end(b.batch), n = (b1 - b0) * b.seq_len;
    sums[0] += model.forward(st, b.inputs.data() + b0 * b.seq_len, b.targets.data() + b0 * b.seq_len, b1 - b0,
                             b.seq_len, run.params, true);
    aux += st.aux_loss_sum;  // the whole batch's on every rank
    for (int64_t l = 0; l < L; ++l) {
      sums[3 + l] += static_cast<double>(st.ffn_experts_per_token[l]) * static_cast<double>(n);
      sums[1] += st.layers[l].moe.relu_sparsity / static_cast<double>(L) * static_cast<double>(n);
    }
    sums[2] += static_cast<double>(n);
    model.backward(run.grads, st, run.params);
    if (par.ep_size() > 1)
      for (int64_t l = 0; l < L; ++l) {
        const ExpertExchange& x = st.layers[l].moe.ep;
        double* c = &sums[3 + L + 5 * l];
        c[0] += static_cast<double>(x.fwd_rows_out);
        c[1] += static_cast<double>(x.fwd_rows_in);
        c[2] += static_cast<double>(x.bwd_rows_out);
        c[3] += static_cast<double>(x.bwd_rows_in);
        c[4] += x.fwd_comm_s + x.bwd_comm_s;
      }
  }
  sums.back() = par.sum_gradients(run.held.refs, run.held.expert);
  const double inv = 1.0 / static_cast<double>(cfg.grad_accum);
  if (cfg.grad_accum > 1)
    for (const ParamRef& r : run.held.refs)
      for (float& x : r.grad->data) x *= static_cast<float>(inv);
  StepStats s;
  s.gnorm = par.grad_norm(run.held.refs, run.held.expert);
  s.lr = sched.at(step);
  run.adam->step(s.lr, clip_scale(s.gnorm, cfg.grad_clip));
  s.dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  par.world().allreduce_sum(sums.data(), static_cast<int64_t>(sums.size()));
  const double ranks = static_cast<double>(par.size());
  s.loss = sums[0] * inv;
  s.aux = aux * inv;
  s.sparsity = sums[1] / sums[2];
  s.ffn.resize(L);
  for (int64_t l = 0; l < L; ++l) s.ffn[l] = sums[3 + l] / sums[2];
  if (par.ep_size() > 1) {
    s.exchange.resize(L);
    for (int64_t l = 0; l < L; ++l) {
      const double* c = &sums[3 + L + 5 * l];
      s.exchange[l] = {c[0], c[1], c[2], c[3], c[4] / ranks};
    }
  }
  s.grad_sync_s = sums.back() / ranks;
  return s;
}

// One optimizer step on a StepBackend (one process, one micro-batch): the batch of the step, the
// backend's step, its statistics as the CPU step reports them.
StepStats backend_step(StepBackend& backend, const data::BatchSampler& sampler, int64_t step, int64_t layers) {
  const auto t0 = std::chrono::steady_clock::now();
  const data::TokenBatch b = sampler.batch_at(static_cast<uint64_t>(step));
  const BackendStepStats r = backend.step(b.inputs.data(), b.targets.data(), b.batch, b.seq_len);
  check(static_cast<int64_t>(r.ffn.size()) == layers, "moepp train: the step backend reported " +
                                                          std::to_string(r.ffn.size()) + " layers, the model has " +
                                                          std::to_string(layers));
  StepStats s;
  s.loss = r.loss;
  s.aux = r.aux;
  s.gnorm = r.gnorm;
  s.lr = r.lr;
  s.ffn = r.ffn;
  s.dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

// The step's log.jsonl record (ntok: tokens per step); evaluations and ReMoE's keys are added later.
// Under mpirun: the ranks, the seconds of the gradient sum, and with expert parallelism each layer's
// exchange (rows and bytes to other ranks, forward and backward, summed over the ranks; seconds, mean
// over the ranks) and the share of the step spent communicating.
nlohmann::json step_record(int64_t step, const StepStats& s, int64_t ntok, const TrainParallel& par,
                           int64_t hidden) {
  nlohmann::json rec = {{"step", step + 1},      {"loss", s.loss},           {"aux_loss", s.aux},
                        {"lr", s.lr},            {"grad_norm", s.gnorm},     {"tokens", (step + 1) * ntok},
                        {"tokens_per_s", ntok / s.dt}};
  nlohmann::json fl = nlohmann::json::array();
  for (double v : s.ffn) fl.push_back(v);
  rec["ffn_experts_per_token"] = fl;
  if (!par.distributed()) return rec;
  rec["ranks"] = par.size();
  rec["ep_size"] = par.ep_size();
  rec["grad_sync_s"] = s.grad_sync_s;
  double comm = s.grad_sync_s;
  if (!s.exchange.empty()) {
    nlohmann::json layers = nlohmann::json::array();
    const double row_bytes = static_cast<double>(hidden) * 4.0;
    for (const LayerExchange& x : s.exchange) {
      layers.push_back({{"fwd_rows_sent", x.fwd_rows_out},
                        {"fwd_rows_received", x.fwd_rows_in},
                        {"bwd_rows_sent", x.bwd_rows_out},
                        {"bwd_rows_received", x.bwd_rows_in},
                        {"fwd_bytes_sent", x.fwd_rows_out * row_bytes},
                        {"bwd_bytes_sent", x.bwd_rows_out * row_bytes},
                        {"comm_s", x.comm_s}});
      comm += x.comm_s;
    }
    rec["expert_exchange"] = layers;
  }
  rec["comm_share"] = comm / s.dt;
  return rec;
}

// ReMoE: logs the lambda the step used and its sparsity, then moves lambda for the next step.
void adapt_relu_l1(Run& run, Model& model, double sparsity, nlohmann::json& rec) {
  MoeConfig& moe = run.mc.moe;
  rec["relu_l1_coef"] = moe.relu_l1_coef;
  rec["relu_sparsity"] = sparsity;
  moe.relu_l1_coef = relu_l1_coef_update(moe.relu_l1_coef, static_cast<float>(sparsity), moe);
  model.set_relu_l1_coef(moe.relu_l1_coef);
}

// The progress bar (tty) or, unless quiet, a line every 10 steps and at evaluations. `done` steps of
// `total`, `left` still to run in this invocation; val_loss is printed when eval.
void report_step(bool tty, bool quiet, int64_t done, int64_t total, int64_t left, const StepStats& s, double tps,
                 int64_t ntok, bool eval, float val_loss) {
  if (tty) {
    progress(done, total, static_cast<float>(s.loss), s.lr, tps, static_cast<double>(left) * ntok / tps);
    if (eval) std::fprintf(stderr, "\n  step %lld: val_loss %.4f\n", static_cast<long long>(done), val_loss);
  } else if (!quiet && (done % 10 == 0 || eval)) {
    std::fprintf(stderr, "step %lld/%lld loss %.4f lr %.2e %.0f tok/s%s\n", static_cast<long long>(done),
                 static_cast<long long>(total), s.loss, s.lr, tps,
                 eval ? (" val_loss " + std::to_string(val_loss)).c_str() : "");
  }
}

// The training loop from run.start_step to cfg.steps (or opt.stop_after), then the final evaluation.
// Every rank runs it; rank 0 alone writes the log and prints.
TrainResult run_steps(Run& run, const RunData& data, const TrainConfig& cfg, const TrainOptions& opt,
                      const std::string& log_path, TrainParallel& par, const AdamWConfig& ac) {
  const bool lead = par.rank() == 0;
  const bool quiet = opt.quiet || !lead;
  const bool tty = isatty(2) && !quiet;
  Model model(run.mc);
  model.set_parallel(par.model_parallel());
  const LrSchedule sched{cfg.init_lr, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps, cfg.cosine};
  data::BatchSampler sampler(data.train, cfg.batch_size, cfg.seq_len, cfg.seed);
  ModelState st, est;
  if (opt.backend) {
    check(!run.adaptive_l1, "moepp train: the step backend (--device) does not run the relu router");
    opt.backend->start(run.mc, run.params, *run.adam, ac, sched, cfg.grad_clip);
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> log_file(nullptr, &std::fclose);
  if (lead) {
    log_file.reset(std::fopen(log_path.c_str(), "a"));
    check(log_file != nullptr, log_path + ": cannot open for appending: " + std::strerror(errno));
  }
  const auto t_start = std::chrono::steady_clock::now();
  int64_t tokens_done = 0;
  float last_val = NAN;
  const int64_t last_step = opt.stop_after > 0 ? std::min(cfg.steps, opt.stop_after) : cfg.steps;
  const std::string kill_point = "train:step:rank" + std::to_string(par.rank());  // the rank-kill test's

  for (int64_t step = run.start_step; step < last_step; ++step) {
    fault_point(kill_point);
    const StepStats s = opt.backend ? backend_step(*opt.backend, sampler, step, run.mc.n_layers)
                                    : train_step(run, model, sampler, st, sched, cfg, step, par);
    const int64_t ntok = cfg.batch_size * cfg.seq_len * cfg.grad_accum;
    tokens_done += ntok;
    nlohmann::json rec = step_record(step, s, ntok, par, run.mc.hidden);
    if (run.adaptive_l1) adapt_relu_l1(run, model, s.sparsity, rec);
    const bool do_eval = (step + 1) % cfg.eval_every == 0 || step + 1 == cfg.steps;
    const bool do_ckpt = (step + 1) % cfg.ckpt_every == 0 || step + 1 == last_step;
    // The backend's weights and optimizer state come back before the host's code reads them.
    if (opt.backend && (do_eval || do_ckpt)) opt.backend->sync_to_host(run.params, *run.adam);
    if (do_eval) {
      last_val = evaluate(model, run.params, data.valid, cfg, est, par);
      rec["val_loss"] = last_val;
      rec["val_bits_per_byte"] = last_val / std::log(2.0) / data.valid_bytes_per_token;
    }
    // A line that cannot be written (a full disk) stops the run: the log is its record.
    if (lead && (std::fprintf(log_file.get(), "%s\n", rec.dump().c_str()) < 0 || std::fflush(log_file.get()) != 0))
      throw Error(log_path + ": cannot append the step's record: " + std::strerror(errno));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double tps = static_cast<double>(tokens_done) / elapsed;
    report_step(tty, quiet, step + 1, cfg.steps, last_step - step - 1, s, tps, ntok, do_eval, last_val);
    if (do_ckpt)
      save_checkpoint(opt.out_dir, step + 1, run.mc, run.params, *run.adam, cfg, run.adaptive_l1, par);
  }
  if (tty) std::fprintf(stderr, "\n");
  if (std::isnan(last_val)) last_val = evaluate(model, run.params, data.valid, cfg, est, par);
  TrainResult r;
  r.val_loss = last_val;
  r.val_bits_per_byte = last_val / std::log(2.0) / data.valid_bytes_per_token;
  r.completed = last_step == cfg.steps;
  return r;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, const TrainOptions& opt) {
  LocalComm alone;
  Comm& world = opt.world != nullptr ? *opt.world : alone;
  const bool lead = world.rank() == 0;
  check(!opt.out_dir.empty(), "moepp train: --out is required");
  // Every rank must run the same run: the config and the options, as each rank read them.
  const std::string args = cfg.to_json().dump() + "\n" + opt.out_dir + "\n" + std::to_string(opt.resume) + " " +
                           std::to_string(opt.stop_after) + " " + std::to_string(opt.ep_size);
  Fnv1a64 args_hash;
  args_hash.add(args);
  check_same_on_every_rank(world, args_hash.value(), "the training config or command line");
  if (opt.backend) {  // what a step backend does not do (step_backend.h), refused before any work
    check(world.size() == 1 && opt.ep_size == 1,
          "moepp train: the step backend (--device) runs one process without expert parallelism");
    check(cfg.grad_accum == 1, "moepp train: the step backend (--device) takes one micro-batch a step (grad_accum 1)");
  }
  const std::string log_path = (fs::path(opt.out_dir) / "log.jsonl").string();
  if (lead) {
    fs::create_directories(opt.out_dir);
    // A write that a crash interrupted left only its temporary directory or file: remove them.
    for (const auto& e : fs::directory_iterator(opt.out_dir)) {
      const std::string name = e.path().filename().string();
      if (name.rfind(".checkpoint-tmp-", 0) == 0 || io::is_atomic_write_temporary(name)) fs::remove_all(e.path());
    }
  }
  // Rank 0 prepares the tokenizer and the shards; the others then read them.
  std::optional<RunData> data;
  if (lead) data.emplace(prepare_data(cfg, opt.out_dir, opt.quiet));
  all_ranks_ok(world, true);
  if (!lead) data.emplace(prepare_data(cfg, opt.out_dir, true));
  ModelConfig mc = run_model_config(cfg, *data);
  TrainParallel par(world, opt.ep_size, mc, cfg.batch_size);
  Run run(std::move(mc), par.shard());
  const AdamWConfig ac{cfg.beta1, cfg.beta2, 1e-8f, cfg.weight_decay};
  if (opt.resume && fs::exists(fs::path(opt.out_dir) / "latest"))
    resume_run(run, ac, opt, log_path, lead);
  else
    start_fresh(run, ac, cfg, opt, log_path, lead);
  par.check_same_weights(run.held.refs, run.held.expert);
  if (lead && par.distributed() && !opt.quiet)
    std::fprintf(stderr, "moepp train: %d ranks, expert parallelism %d x data parallelism %d\n", par.size(),
                 par.ep_size(), par.size() / par.ep_size());
  return run_steps(run, *data, cfg, opt, log_path, par, ac);
}

}  // namespace moepp
