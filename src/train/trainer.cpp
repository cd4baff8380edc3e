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
#include <memory>
#include <sstream>

#include "core/error.h"
#include "core/fault_point.h"
#include "data/token_shards.h"
#include "io/file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/model_state.h"
#include "moe/balance_loss.h"
#include "tokenizer/tokenizer.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

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

std::vector<ParamRef> param_refs(const ModelConfig& mc, ModelParams& p, ModelParams& g) {
  std::vector<ParamRef> r;
  auto pn = p.named(mc);
  auto gn = g.named(mc);
  for (size_t i = 0; i < pn.size(); ++i) r.push_back({pn[i].first, pn[i].second, gn[i].second});
  return r;
}

// A checkpoint is written whole into a temporary directory, renamed to checkpoint-<step>, and only
// then named by `latest` (atomically); older checkpoints go after that. A crash at any point leaves
// `latest` naming a complete checkpoint; a failed write (a full disk) removes the temporary
// directory and throws, keeping the previous checkpoint. The fault points are the crash tests'.
void save_checkpoint(const std::string& out, int64_t step, const ModelConfig& mc, const ModelParams& p,
                     AdamW& opt, const TrainConfig& cfg, bool adaptive_l1) {
  const fs::path final_dir = fs::path(out) / ("checkpoint-" + std::to_string(step));
  const fs::path tmp = fs::path(out) / (".checkpoint-tmp-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    save_model(tmp.string(), mc, p);
    fault_point("checkpoint:model");
    fs::copy_file(fs::path(out) / "tokenizer.model", tmp / "tokenizer.model");
    io::SafetensorsWriter w;
    for (size_t i = 0; i < opt.params().size(); ++i) {
      w.add_f32("m." + opt.params()[i].name, opt.m()[i]);
      w.add_f32("v." + opt.params()[i].name, opt.v()[i]);
    }
    w.set_metadata("step", std::to_string(opt.steps()));
    w.write((tmp / "optimizer.safetensors").string());
    fault_point("checkpoint:optimizer");
    nlohmann::json state = {{"step", step}, {"optimizer_steps", opt.steps()}, {"train_config", cfg.to_json()}};
    if (adaptive_l1) state["relu_l1_coef"] = mc.moe.relu_l1_coef;  // the value for the next step
    io::write_file_atomic((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
    fault_point("checkpoint:state");
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw Error("checkpoint of step " + std::to_string(step) + " not written (the previous one is kept): " + e.what());
  }
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

float evaluate(const Model& model, const ModelParams& p, const data::TokenShard& valid, const TrainConfig& cfg,
               ModelState& st) {
  const int64_t T = std::min<int64_t>(cfg.seq_len, static_cast<int64_t>(valid.size()) - 1);
  check(T >= 1, valid.path() + ": the validation shard is too small");
  data::BatchSampler s(valid, cfg.batch_size, T, cfg.seed, data::BatchSampler::Mode::kSequential);
  const int64_t batches = std::min<int64_t>(cfg.eval_batches,
                                            std::max<int64_t>(1, static_cast<int64_t>(s.num_windows()) / cfg.batch_size));
  double sum = 0.0;
  for (int64_t b = 0; b < batches; ++b) {
    const data::TokenBatch tb = s.batch_at(static_cast<uint64_t>(b));
    sum += model.forward(st, tb.inputs.data(), tb.targets.data(), tb.batch, tb.seq_len, p, false);
  }
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
struct Run {
  explicit Run(ModelConfig c)
      : mc(std::move(c)),
        params(ModelParams::zeros(mc)),
        grads(ModelParams::zeros(mc)),
        adaptive_l1(mc.moe.router == RouterKind::kRelu) {}
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  ModelConfig mc;
  ModelParams params, grads;
  std::unique_ptr<AdamW> adam;
  int64_t start_step = 0;
  // ReMoE (relu router): lambda starts at moe_relu_l1_coef and is multiplied or divided by 1.2 after
  // every step to hold the mean sparsity over the layers at 1 - K/E (one lambda for all layers).
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

// Reads AdamW's moments from dir/optimizer.safetensors into adam.
void load_optimizer_state(AdamW& adam, const std::string& dir) {
  io::SafetensorsFile of((fs::path(dir) / "optimizer.safetensors").string());
  for (size_t i = 0; i < adam.params().size(); ++i) {
    adam.m()[i] = of.read_f32("m." + adam.params()[i].name);
    adam.v()[i] = of.read_f32("v." + adam.params()[i].name);
    check(adam.m()[i].shape == adam.params()[i].value->shape,
          of.path() + ": optimizer state of '" + adam.params()[i].name + "' has the wrong shape");
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
void resume_run(Run& run, const AdamWConfig& ac, const TrainOptions& opt, const std::string& log_path) {
  const std::string dir = resolve_model_dir(opt.out_dir);
  auto [lc, lp] = load_model(dir);
  check_same_model(dir, lc, run.mc, run.adaptive_l1);  // before anything else
  run.params = std::move(lp);
  const nlohmann::json state = io::read_json_file((fs::path(dir) / "trainer_state.json").string());
  run.start_step = state.at("step").get<int64_t>();
  run.adam = std::make_unique<AdamW>(param_refs(run.mc, run.params, run.grads), ac);
  load_optimizer_state(*run.adam, dir);
  run.adam->set_steps(state.at("optimizer_steps").get<int64_t>());
  if (run.adaptive_l1) run.mc.moe.relu_l1_coef = saved_relu_l1_coef(state, dir);
  truncate_log(log_path, run.start_step);
  if (!opt.quiet)
    std::fprintf(stderr, "moepp train: resuming from %s at step %lld\n", dir.c_str(),
                 static_cast<long long>(run.start_step));
}

// Starts the run at step 0: random weights, a fresh optimizer, the run's config and an empty log.
void start_fresh(Run& run, const AdamWConfig& ac, const TrainConfig& cfg, const TrainOptions& opt,
                 const std::string& log_path) {
  if (opt.resume && !opt.quiet)
    std::fprintf(stderr, "moepp train: nothing to resume in %s, starting fresh\n", opt.out_dir.c_str());
  run.params.init_random(run.mc, cfg.seed, cfg.init_std);
  run.adam = std::make_unique<AdamW>(param_refs(run.mc, run.params, run.grads), ac);
  io::write_file_atomic((fs::path(opt.out_dir) / "train_config.json").string(), cfg.to_json().dump(2) + "\n");
  io::write_file_atomic(log_path, "");
}

// What one optimizer step measured, as means over its micro-batches.
struct StepStats {
  double loss = 0.0, aux = 0.0;
  std::vector<double> ffn;  // [layers] FFN experts per token
  double sparsity = 0.0;    // ReMoE: mean over the layers
  float gnorm = 0.0f, lr = 0.0f;
  double dt = 0.0;  // seconds
};

// One optimizer step: forward/backward of cfg.grad_accum micro-batches, gradient mean, clip, AdamW.
StepStats train_step(Run& run, const Model& model, const data::BatchSampler& sampler, ModelState& st,
                     const LrSchedule& sched, const TrainConfig& cfg, int64_t step) {
  const ModelConfig& mc = run.mc;
  const auto t0 = std::chrono::steady_clock::now();
  run.grads.zero();
  double loss = 0.0, aux = 0.0;
  std::vector<double> ffn(mc.n_layers, 0.0);
  double sparsity = 0.0;
  for (int64_t micro = 0; micro < cfg.grad_accum; ++micro) {
    const data::TokenBatch b = sampler.batch_at(static_cast<uint64_t>(step * cfg.grad_accum + micro));
    loss += model.forward(st, b.inputs.data(), b.targets.data(), b.batch, b.seq_len, run.params, true);
    aux += st.aux_loss_sum;
    for (int64_t l = 0; l < mc.n_layers; ++l) {
      ffn[l] += st.ffn_experts_per_token[l];
      sparsity += st.layers[l].moe.relu_sparsity / static_cast<double>(mc.n_layers);
    }
    model.backward(run.grads, st, run.params);
  }
  const double inv = 1.0 / static_cast<double>(cfg.grad_accum);
  if (cfg.grad_accum > 1)
    for (auto& [n, g] : run.grads.named(mc))
      for (float& x : g->data) x *= static_cast<float>(inv);
  StepStats s;
  s.gnorm = grad_norm(run.adam->params());
  s.lr = sched.at(step);
  run.adam->step(s.lr, clip_scale(s.gnorm, cfg.grad_clip));
  s.dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.loss = loss * inv;
  s.aux = aux * inv;
  for (double& v : ffn) v *= inv;
  s.ffn = std::move(ffn);
  s.sparsity = sparsity * inv;
  return s;
}

// The step's log.jsonl record (ntok: tokens per step); evaluations and ReMoE's keys are added later.
nlohmann::json step_record(int64_t step, const StepStats& s, int64_t ntok) {
  nlohmann::json rec = {{"step", step + 1},      {"loss", s.loss},           {"aux_loss", s.aux},
                        {"lr", s.lr},            {"grad_norm", s.gnorm},     {"tokens", (step + 1) * ntok},
                        {"tokens_per_s", ntok / s.dt}};
  nlohmann::json fl = nlohmann::json::array();
  for (double v : s.ffn) fl.push_back(v);
  rec["ffn_experts_per_token"] = fl;
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
TrainResult run_steps(Run& run, const RunData& data, const TrainConfig& cfg, const TrainOptions& opt,
                      const std::string& log_path) {
  const bool tty = isatty(2) && !opt.quiet;
  Model model(run.mc);
  const LrSchedule sched{cfg.init_lr, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps, cfg.cosine};
  data::BatchSampler sampler(data.train, cfg.batch_size, cfg.seq_len, cfg.seed);
  ModelState st, est;
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> log_file(std::fopen(log_path.c_str(), "a"), &std::fclose);
  std::FILE* log = log_file.get();
  check(log != nullptr, log_path + ": cannot open for appending: " + std::strerror(errno));
  const auto t_start = std::chrono::steady_clock::now();
  int64_t tokens_done = 0;
  float last_val = NAN;
  const int64_t last_step = opt.stop_after > 0 ? std::min(cfg.steps, opt.stop_after) : cfg.steps;

  for (int64_t step = run.start_step; step < last_step; ++step) {
    const StepStats s = train_step(run, model, sampler, st, sched, cfg, step);
    const int64_t ntok = cfg.batch_size * cfg.seq_len * cfg.grad_accum;
    tokens_done += ntok;
    nlohmann::json rec = step_record(step, s, ntok);
    if (run.adaptive_l1) adapt_relu_l1(run, model, s.sparsity, rec);
    const bool do_eval = (step + 1) % cfg.eval_every == 0 || step + 1 == cfg.steps;
    if (do_eval) {
      last_val = evaluate(model, run.params, data.valid, cfg, est);
      rec["val_loss"] = last_val;
      rec["val_bits_per_byte"] = last_val / std::log(2.0) / data.valid_bytes_per_token;
    }
    // A line that cannot be written (a full disk) stops the run: the log is its record.
    if (std::fprintf(log, "%s\n", rec.dump().c_str()) < 0 || std::fflush(log) != 0)
      throw Error(log_path + ": cannot append the step's record: " + std::strerror(errno));
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double tps = static_cast<double>(tokens_done) / elapsed;
    report_step(tty, opt.quiet, step + 1, cfg.steps, last_step - step - 1, s, tps, ntok, do_eval, last_val);
    if ((step + 1) % cfg.ckpt_every == 0 || step + 1 == last_step)
      save_checkpoint(opt.out_dir, step + 1, run.mc, run.params, *run.adam, cfg, run.adaptive_l1);
  }
  if (tty) std::fprintf(stderr, "\n");
  if (std::isnan(last_val)) last_val = evaluate(model, run.params, data.valid, cfg, est);
  TrainResult r;
  r.val_loss = last_val;
  r.val_bits_per_byte = last_val / std::log(2.0) / data.valid_bytes_per_token;
  r.completed = last_step == cfg.steps;
  return r;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, const TrainOptions& opt) {
  check(!opt.out_dir.empty(), "moepp train: --out is required");
  fs::create_directories(opt.out_dir);
  // A write that a crash interrupted left only its temporary directory or file: remove them.
  for (const auto& e : fs::directory_iterator(opt.out_dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".checkpoint-tmp-", 0) == 0 || io::is_atomic_write_temporary(name)) fs::remove_all(e.path());
  }
  const std::string log_path = (fs::path(opt.out_dir) / "log.jsonl").string();
  const RunData data = prepare_data(cfg, opt.out_dir, opt.quiet);
  Run run(run_model_config(cfg, data));
  const AdamWConfig ac{cfg.beta1, cfg.beta2, 1e-8f, cfg.weight_decay};
  if (opt.resume && fs::exists(fs::path(opt.out_dir) / "latest"))
    resume_run(run, ac, opt, log_path);
  else
    start_fresh(run, ac, cfg, opt, log_path);
  return run_steps(run, data, cfg, opt, log_path);
}

}  // namespace moepp
