// Unit tests of the decoder model (src/model/model): tokens and targets outside the vocabulary and
// sequences longer than the context are errors, batch rows are independent in inference, the fused
// and the recomputing head backward agree, and training steps lower the loss. End-to-end parity with
// PyTorch is in tests/python/test_model_parity.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "model/model_state.h"
#include "test_util.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using namespace test;

TEST(Model, RejectsTokensOutsideTheVocabulary) {
  const ModelConfig c = tiny_config();
  const Model m(c);
  const ModelParams p = tiny_params(c, 1);
  ModelState st;
  std::vector<int32_t> tok = {1, 2, 31, 4};
  const std::string e = error_message([&] { m.forward(st, tok.data(), nullptr, 1, 4, p, false); });
  EXPECT_NE(e.find("token id 31 at position 2"), std::string::npos) << e;
  tok[2] = 3;
  std::vector<int32_t> tg = {1, -2, 3, 4};
  const std::string e2 = error_message([&] { m.forward(st, tok.data(), tg.data(), 1, 4, p, false); });
  EXPECT_NE(e2.find("target id -2"), std::string::npos) << e2;
  std::vector<int32_t> long_seq(65, 1);
  const std::string e3 = error_message([&] { m.forward(st, long_seq.data(), nullptr, 1, 65, p, false); });
  EXPECT_NE(e3.find("max_position_embeddings"), std::string::npos) << e3;
}

// Inference is per sequence: a batch of two gives each sequence's logits of a batch of one.
TEST(Model, BatchRowsAreIndependentInInference) {
  const ModelConfig c = tiny_config();
  const Model m(c);
  const ModelParams p = tiny_params(c, 2);
  const int64_t T = 37;
  const auto tok = random_tokens(2 * T, c.vocab, 3);
  ModelState both, one;
  both.keep_logits = one.keep_logits = true;
  m.forward(both, tok.data(), nullptr, 2, T, p, false);
  for (int64_t b = 0; b < 2; ++b) {
    m.forward(one, tok.data() + b * T, nullptr, 1, T, p, false);
    double worst = 0;
    for (int64_t i = 0; i < T * c.vocab; ++i)
      worst = std::max(worst, static_cast<double>(std::abs(one.logits.data[i] - both.logits.data[b * T * c.vocab + i])));
    EXPECT_LT(worst, 1e-5) << "sequence " << b;
  }
}

// The head's gradient taken during a training forward equals the one backward recomputes (aux loss
// off, no capacity, so training and inference passes compute the same function).
TEST(Model, FusedHeadBackwardEqualsRecomputed) {
  nlohmann::json j = tiny_config_json();
  j["moe_aux_loss_coef"] = 0.0;
  j["vocab_size"] = 1000;  // several head chunks? (chunk >= 16 rows; N = 40 rows)
  const ModelConfig c = ModelConfig::from_json(j, "c");
  const Model m(c);
  const ModelParams p = tiny_params(c, 4);
  const int64_t B = 2, T = 20;
  auto tok = random_tokens(B * T, c.vocab, 5), tg = random_tokens(B * T, c.vocab, 6);
  tg[3] = tg[17] = -1;
  ModelParams g1 = ModelParams::zeros(c), g2 = ModelParams::zeros(c);
  ModelState s1, s2;
  const float l1 = m.forward(s1, tok.data(), tg.data(), B, T, p, true);
  EXPECT_TRUE(s1.head_grad_ready);
  m.backward(g1, s1, p);
  const float l2 = m.forward(s2, tok.data(), tg.data(), B, T, p, false);
  EXPECT_FALSE(s2.head_grad_ready);
  m.backward(g2, s2, p);
  EXPECT_NEAR(l1, l2, 1e-6);
  auto n1 = g1.named(c), n2 = g2.named(c);
  for (size_t i = 0; i < n1.size(); ++i) {
    double worst = 0, scale = 1e-6;
    for (size_t k = 0; k < n1[i].second->numel(); ++k) {
      worst = std::max(worst, static_cast<double>(std::abs(n1[i].second->data[k] - n2[i].second->data[k])));
      scale = std::max(scale, static_cast<double>(std::abs(n2[i].second->data[k])));
    }
    EXPECT_LT(worst, 1e-5 * scale) << n1[i].first;
  }
}

// A few SGD steps on one short repeated sequence lower the training loss (CE + aux).
TEST(Model, SgdStepsLowerTheLoss) {
  for (const std::string router : {"moepp", "topk"}) {
    const ModelConfig c = tiny_config(router);
    const Model m(c);
    ModelParams p = tiny_params(c, 7);
    ModelParams g = ModelParams::zeros(c);
    const int64_t B = 2, T = 24;
    std::vector<int32_t> tok(B * T), tg(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      tok[i] = static_cast<int32_t>((i % T) % 6 + 3);  // 3 4 5 6 7 8 3 4 ...
      tg[i] = static_cast<int32_t>(((i % T) + 1) % 6 + 3);
    }
    ModelState st;
    float first = 0, last = 0;
    for (int step = 0; step < 12; ++step) {
      const float loss = m.forward(st, tok.data(), tg.data(), B, T, p, true) + st.aux_loss_sum;
      ASSERT_TRUE(std::isfinite(loss));
      if (step == 0) first = loss;
      last = loss;
      g.zero();
      m.backward(g, st, p);
      auto pn = p.named(c);
      auto gn = g.named(c);
      for (size_t i = 0; i < pn.size(); ++i)
        for (size_t k = 0; k < pn[i].second->numel(); ++k) pn[i].second->data[k] -= 0.5f * gn[i].second->data[k];
    }
    EXPECT_LT(last, 0.5f * first) << router << ": first " << first << ", last " << last;
    EXPECT_EQ(st.ffn_experts_per_token.size(), 2u);
    for (float f : st.ffn_experts_per_token) {
      EXPECT_GE(f, 0.0f);
      EXPECT_LE(f, 2.0f);
    }
  }
}

}  // namespace
}  // namespace moepp
