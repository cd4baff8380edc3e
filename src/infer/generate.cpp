// generate(): full-recompute decoding with greedy / temperature + top-k sampling.
#include "infer/generate.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "model/model_state.h"

namespace moepp {

std::vector<int32_t> generate(const Model& model, const ModelParams& params, std::vector<int32_t> ids,
                              const SampleOptions& opt) {
  check(!ids.empty(), "generate: the prompt must hold at least one token");
  const int64_t V = model.config().vocab, max_ctx = model.config().max_pos;
  std::mt19937_64 rng(opt.seed);
  ModelState st;
  st.keep_logits = true;
  std::vector<std::pair<float, int32_t>> cand(V);
  for (int64_t n = 0; n < opt.max_new_tokens; ++n) {
    const int64_t start = std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - max_ctx);
    const int64_t T = static_cast<int64_t>(ids.size()) - start;
    model.forward(st, ids.data() + start, nullptr, 1, T, params, false);
    const float* logits = st.logits.ptr() + (T - 1) * V;
    int32_t next = 0;
    if (opt.temperature <= 0.0f) {
      next = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
    } else {
      for (int64_t v = 0; v < V; ++v) cand[v] = {logits[v], static_cast<int32_t>(v)};
      const int64_t k = opt.top_k > 0 ? std::min<int64_t>(opt.top_k, V) : V;
      std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), [](auto& a, auto& b) { return a.first > b.first; });
      std::vector<double> w(k);
      for (int64_t i = 0; i < k; ++i) w[i] = std::exp((cand[i].first - cand[0].first) / opt.temperature);
      std::discrete_distribution<int64_t> pick(w.begin(), w.end());
      next = cand[pick(rng)].second;
    }
    ids.push_back(next);
    if (opt.stop_at_eos && next == model.config().eos) break;
  }
  return ids;
}

}  // namespace moepp
