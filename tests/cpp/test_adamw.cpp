// Unit tests of the optimiser (src/train/adamw): AdamW against a double-precision reference of
// torch.optim.AdamW's update (decoupled decay, bias corrections), weight decay only on matrices, the
// global gradient norm, the clipping factor, and clipping fused into the update giving exactly the floats
// of clipping in place first.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "train/adamw.h"

namespace moepp {
namespace {

struct Params {
  Tensor w_mat{{3, 70000}}, w_vec{{257}}, g_mat{{3, 70000}}, g_vec{{257}};  // the matrix takes the parallel path

  explicit Params(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d;
    for (Tensor* t : {&w_mat, &w_vec}) for (float& x : t->data) x = d(rng);
    randomize_grads(rng, 1.0f);
  }
  void randomize_grads(std::mt19937& rng, float scale) {
    std::normal_distribution<float> d;
    for (Tensor* t : {&g_mat, &g_vec}) for (float& x : t->data) x = scale * d(rng);
  }
  std::vector<ParamRef> refs() { return {{"w_mat", &w_mat, &g_mat}, {"w_vec", &w_vec, &g_vec}}; }
};

// torch.optim.AdamW, one tensor, in double: p *= 1 - lr*wd; m, v moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
struct RefAdamW {
  std::vector<double> p, m, v;
  double b1, b2, eps, wd;
  int t = 0;
  void step(const std::vector<float>& g, double lr) {
    ++t;
    const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
    for (size_t j = 0; j < p.size(); ++j) {
      p[j] *= 1.0 - lr * wd;
      m[j] = b1 * m[j] + (1.0 - b1) * g[j];
      v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
      p[j] -= lr / bc1 * m[j] / (std::sqrt(v[j]) / std::sqrt(bc2) + eps);
    }
  }
};

TEST(AdamW, MatchesTorchAdamWReferenceAndDecaysOnlyMatrices) {
  Params P(1);
  const AdamWConfig cfg{0.9f, 0.95f, 1e-8f, 0.1f};
  AdamW opt(P.refs(), cfg);
  RefAdamW rm{{P.w_mat.data.begin(), P.w_mat.data.end()}, {}, {}, 0.9, 0.95, 1e-8, 0.1};
  RefAdamW rv{{P.w_vec.data.begin(), P.w_vec.data.end()}, {}, {}, 0.9, 0.95, 1e-8, 0.0};  // vectors: no decay
  rm.m.assign(rm.p.size(), 0.0), rm.v.assign(rm.p.size(), 0.0);
  rv.m.assign(rv.p.size(), 0.0), rv.v.assign(rv.p.size(), 0.0);
  std::mt19937 rng(7);
  const float lrs[] = {1e-3f, 3e-3f, 2e-3f, 5e-4f, 1e-3f};
  for (float lr : lrs) {
    rm.step(P.g_mat.data, lr);
    rv.step(P.g_vec.data, lr);
    opt.step(lr);
    P.randomize_grads(rng, 0.5f);
  }
  EXPECT_EQ(opt.steps(), 5);
  double worst = 0.0;
  for (size_t j = 0; j < rm.p.size(); ++j) worst = std::max(worst, std::abs(P.w_mat.data[j] - rm.p[j]));
  for (size_t j = 0; j < rv.p.size(); ++j) worst = std::max(worst, std::abs(P.w_vec.data[j] - rv.p[j]));
  EXPECT_LT(worst, 2e-6);
  // The decay really is on the matrix only: with zero gradients the vector stays, the matrix shrinks.
  Params Q(2);
  for (Tensor* t : {&Q.g_mat, &Q.g_vec}) t->zero();
  const std::vector<float> vec0 = Q.w_vec.data, mat0 = Q.w_mat.data;
  AdamW z(Q.refs(), cfg);
  z.step(0.5f);
  EXPECT_EQ(Q.w_vec.data, vec0);
  EXPECT_FLOAT_EQ(Q.w_mat.data[5], mat0[5] * (1.0f - 0.5f * 0.1f));
}

TEST(AdamW, GradNormAndClipScale) {
  Params P(3);
  double sq = 0.0;
  for (float x : P.g_mat.data) sq += static_cast<double>(x) * x;
  for (float x : P.g_vec.data) sq += static_cast<double>(x) * x;
  const float n = grad_norm(P.refs());
  EXPECT_NEAR(n, std::sqrt(sq), 1e-6 * std::sqrt(sq));
  EXPECT_EQ(clip_scale(n, 0.0f), 1.0f);   // no clipping
  EXPECT_EQ(clip_scale(n, -1.0f), 1.0f);
  EXPECT_EQ(clip_scale(n, n), 1.0f);      // at the threshold: unchanged
  EXPECT_EQ(clip_scale(n, 2.0f * n), 1.0f);
  EXPECT_FLOAT_EQ(clip_scale(n, 1.0f), 1.0f / (n + 1e-6f));
  // clip_grad_norm leaves gradients of the clipped norm (and returns the norm before).
  EXPECT_FLOAT_EQ(clip_grad_norm(P.refs(), 1.0f), n);
  EXPECT_NEAR(grad_norm(P.refs()), 1.0f, 1e-5f);
}

TEST(AdamW, FusedClippingEqualsClippingInPlace) {
  for (float max_norm : {0.5f, 1e6f}) {  // clipped, and not clipped
    Params A(4), B(4);
    const AdamWConfig cfg{0.9f, 0.95f, 1e-8f, 0.1f};
    AdamW oa(A.refs(), cfg), ob(B.refs(), cfg);
    std::mt19937 ra(9), rb(9);
    for (int s = 0; s < 3; ++s) {
      clip_grad_norm(A.refs(), max_norm);
      oa.step(1e-2f);
      const float n = grad_norm(B.refs());
      ob.step(1e-2f, clip_scale(n, max_norm));
      A.randomize_grads(ra, 3.0f);
      B.randomize_grads(rb, 3.0f);
    }
    EXPECT_EQ(A.w_mat.data, B.w_mat.data) << "max_norm " << max_norm;
    EXPECT_EQ(A.w_vec.data, B.w_vec.data);
    EXPECT_EQ(oa.m()[0].data, ob.m()[0].data);
    EXPECT_EQ(oa.v()[1].data, ob.v()[1].data);
  }
}

}  // namespace
}  // namespace moepp
