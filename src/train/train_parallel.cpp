// TrainParallel (see train_parallel.h).
#include "train/train_parallel.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "comm/agreement.h"
#include "core/error.h"
#include "core/fnv1a.h"
#include "moe/expert_parallel.h"

namespace moepp {

TrainParallel::TrainParallel(Comm& world, int ep_size, const ModelConfig& cfg, int64_t batch)
    : world_(world), ep_size_(ep_size) {
  const int N = world.size();
  if (ep_size < 1) throw JobWideError("--ep-size must be >= 1, got " + std::to_string(ep_size));
  if (N % ep_size != 0)
    throw JobWideError("--ep-size " + std::to_string(ep_size) + " does not divide the " + std::to_string(N) +
                       " ranks (N ranks = ep-size x data-parallel replicas)");
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const int64_t n_ffn = cfg.layer_moe(static_cast<int>(l), false).n_ffn();
    if (n_ffn % ep_size != 0)
      throw JobWideError("--ep-size " + std::to_string(ep_size) + " does not divide layer " + std::to_string(l) +
                         "'s " + std::to_string(n_ffn) + " FFN experts");
  }
  if (batch < N)
    throw JobWideError("training config: batch_size " + std::to_string(batch) + " is smaller than the " +
                       std::to_string(N) + " ranks (each rank takes at least one sequence)");
  if (N > 1) {
    experts_ = world.split(world.rank() / ep_size, world.rank());
    replicas_ = world.split(world.rank() % ep_size, world.rank());
  }
}

ModelParallel TrainParallel::model_parallel() {
  ModelParallel p;
  if (world_.size() > 1) p.batch = &world_;
  if (ep_size_ > 1) p.experts = experts_.get();
  return p;
}

double TrainParallel::sum_gradients(const std::vector<ParamRef>& params, const std::vector<bool>& expert) {
  if (world_.size() == 1) return 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  // One allreduce per kind over a staging buffer of all its gradients.
  for (const bool kind : {false, true}) {
    Comm& over = kind ? *replicas_ : world_;
    if (kind && over.size() == 1) continue;
    size_t n = 0;
    for (size_t i = 0; i < params.size(); ++i)
      if (expert[i] == kind) n += params[i].grad->numel();
    staging_.resize(n);
    size_t at = 0;
    for (size_t i = 0; i < params.size(); ++i)
      if (expert[i] == kind) {
        std::memcpy(staging_.data() + at, params[i].grad->ptr(), sizeof(float) * params[i].grad->numel());
        at += params[i].grad->numel();
      }
    over.allreduce_sum(staging_.data(), static_cast<int64_t>(n));
    at = 0;
    for (size_t i = 0; i < params.size(); ++i)
      if (expert[i] == kind) {
        std::memcpy(params[i].grad->ptr(), staging_.data() + at, sizeof(float) * params[i].grad->numel());
        at += params[i].grad->numel();
      }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

float TrainParallel::grad_norm(const std::vector<ParamRef>& params, const std::vector<bool>& expert) {
  if (ep_size_ == 1) return moepp::grad_norm(params);  // every rank holds every gradient, summed
  std::vector<ParamRef> dense, mine;
  for (size_t i = 0; i < params.size(); ++i) (expert[i] ? mine : dense).push_back(params[i]);
  double sq[2] = {0.0, grad_sum_squares(mine)};
  experts_->allreduce_sum(&sq[1], 1);
  sq[0] = grad_sum_squares(dense);
  return static_cast<float>(std::sqrt(sq[0] + sq[1]));
}

void TrainParallel::check_same_weights(const std::vector<ParamRef>& params, const std::vector<bool>& expert) {
  if (world_.size() == 1) return;
  Fnv1a64 dense, experts;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& t = *params[i].value;
    Fnv1a64& h = expert[i] ? experts : dense;
    h.add(params[i].name);
    h.add(t.ptr(), sizeof(float) * t.numel());
  }
  check_same_on_every_rank(world_, dense.value(), "the model's dense weights");
  // Experts: every rank compares every rank's with its first replica's (rank r % E), so that all agree.
  std::vector<int64_t> all(world_.size());
  const int64_t h = static_cast<int64_t>(experts.value());
  world_.allgather(all.data(), &h, 1);
  std::string differ;
  for (int r = ep_size_; r < world_.size(); ++r)
    if (all[r] != all[r % ep_size_]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw JobWideError("the FFN experts' weights differ between replicas: rank(s) " + differ +
                       " do not hold what rank (r mod ep-size) holds (every rank must read the same files)");
}

}  // namespace moepp
