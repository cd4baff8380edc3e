// Routing statistics of a trained MoE++ model over a text (docs/analysis.md, "Routing analysis"):
// the analyses of spec §6 — FFN experts activated per token (per layer and per vocabulary token),
// histograms of the top-1 / top-2 routing scores with and without the gating residual — plus the
// share of slots per expert type. RoutingStats accumulates them from forward passes (ModelState);
// analyze_routing() runs the model over a token stream in inference mode, twice when the model has
// a gating residual (the second time with it removed); routing_json() writes the report.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "model/model_params.h"
#include "model/model_state.h"

namespace moepp {
class Tokenizer;
}

namespace moepp::analysis {

// Counts of scores in `bins` equal bins on [0, 1] (a score of exactly 1 goes to the last bin), per layer.
struct ScoreHistogram {
  int bins = 0;
  std::vector<std::vector<int64_t>> per_layer;  // [L][bins]
  std::vector<double> sum;                      // [L] sum of the scores (for the means)
  std::vector<int64_t> count;                   // [L] scores added

  void reset(int64_t n_layers, int n_bins);
  void add(int64_t layer, float score);
  std::vector<int64_t> overall() const;  // [bins] summed over layers
  double mean(int64_t layer) const;      // 0 when empty
  double mean() const;                   // over all layers
};

// Routing statistics accumulated over forward passes of one model (inference: every slot is kept).
struct RoutingStats {
  int64_t n_layers = 0, n_experts = 0, n_ffn = 0, slot_width = 0, vocab = 0;
  int64_t tokens = 0;  // tokens added (each counted once, not per layer)

  std::vector<int64_t> ffn_slots;                  // [L] a token's slots on FFN experts, summed over tokens
  std::vector<std::vector<int64_t>> expert_slots;  // [L][E] slots routed to each expert
  std::vector<int64_t> token_count;                // [V] occurrences of each vocabulary token
  std::vector<int64_t> token_ffn;                  // [V * L] FFN slots of each token's occurrences, per layer

  // Routing scores p = softmax(s) of each token's first and second selected expert (the router's
  // ranks). has_scores is false for the ReLU router (no softmax); has_top2 needs a slot width >= 2.
  bool has_scores = false, has_top2 = false;
  ScoreHistogram top1, top2;

  RoutingStats() = default;
  RoutingStats(const ModelConfig& cfg, int bins);

  // Adds the routing of the last forward pass held in st (any B, T). Throws moepp::Error when the
  // state does not match the config.
  void add(const ModelState& st, const ModelConfig& cfg);

  double mean_ffn(int64_t layer) const;  // mean FFN experts per token in a layer
  double mean_ffn() const;               // averaged over layers
  double token_mean_ffn(int32_t id, int64_t layer) const;  // 0 for a token never seen
  double token_mean_ffn(int32_t id) const;                 // averaged over layers
  int64_t slots(int64_t layer) const;                      // slots (non-padding) of a layer
};

struct AnalyzeOptions {
  int64_t seq_len = 256;        // window length (<= the model's max_position_embeddings)
  int64_t batch = 8;            // windows per forward pass (routing does not depend on it: dropless)
  int bins = 50;                // histogram bins on [0, 1]
  bool no_residual_pass = true; // also run with the gating residual removed (when the model has one)
};

struct RoutingAnalysis {
  int64_t seq_len = 0, windows = 0, tokens = 0;
  double loss = 0.0;  // mean next-token cross-entropy (nats/token) over the stream
  RoutingStats stats;  // the model as it is
  // The same model with the gating residual removed (z_prev · Wmap^T not added in any layer); only
  // when the model uses the residual (moe_gating_residual and more than one layer).
  std::optional<RoutingStats> no_residual;
  double loss_no_residual = 0.0;
};

// The model with its gating residual removed: the config with moe.gating_residual = false. Inference
// with it and the unchanged params equals inference with every gate_map zeroed (the router never
// reads gate_map when the residual is off).
ModelConfig without_gating_residual(const ModelConfig& cfg);

// Token stream of documents: bos, the document's ids, eos (ids < 0 in cfg are left out), cut at
// max_tokens (<= 0: no limit).
std::vector<int32_t> document_tokens(const Tokenizer& tok, const std::vector<std::string>& docs,
                                     const ModelConfig& cfg, int64_t max_tokens);

// Runs the model over `tokens` cut into windows of opt.seq_len (the last one may be shorter) in
// inference mode and accumulates the statistics. Throws moepp::Error on an empty stream, a token
// outside the vocabulary or a seq_len the model cannot take.
RoutingAnalysis analyze_routing(const ModelConfig& cfg, const ModelParams& params, const std::vector<int32_t>& tokens,
                                const AnalyzeOptions& opt);

// The report (fields in docs/analysis.md). tok (may be null) gives the tokens' pieces and text;
// `top` is the length of the token lists; tokens with fewer than min_count occurrences are left out of
// the most / fewest FFN experts lists.
nlohmann::json routing_json(const RoutingAnalysis& a, const ModelConfig& cfg, const Tokenizer* tok, int64_t top,
                            int64_t min_count = 10);

}  // namespace moepp::analysis
