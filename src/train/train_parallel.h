// TrainParallel: how a training run spreads over the processes of an mpirun job (docs/distributed.md):
// N ranks = E-rank expert-parallel groups x N/E data-parallel replicas. Rank r is rank r % E of the
// expert-parallel group r / E (it holds that group rank's FFN experts, model/checkpoint.h ExpertShard)
// and takes rows [B*r/N, B*(r+1)/N) of every global batch of B sequences. Dense gradients are summed over
// all ranks, an expert's over its replicas (the ranks r' = r mod E); the clipping norm is the global one.
// One process is the case N = E = 1, where every call here is a no-op or a copy.
//
// Contract: every rank makes every call in the same order (they are collectives). Errors that every
// rank detects together (a bad --ep-size, configs or weights that differ) are thrown as JobWideError on
// every rank. Not thread-safe. The world Comm must outlive the object.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "train/adamw.h"

namespace moepp {

class TrainParallel {
 public:
  // Throws JobWideError (on every rank) when ep_size < 1, the world size is not a multiple of ep_size,
  // or ep_size does not divide every layer's FFN expert count of cfg, or batch < world size.
  TrainParallel(Comm& world, int ep_size, const ModelConfig& cfg, int64_t batch);

  int rank() const { return world_.rank(); }
  int size() const { return world_.size(); }
  bool distributed() const { return world_.size() > 1; }
  int ep_size() const { return ep_size_; }
  ExpertShard shard() const { return {world_.rank() % ep_size_, ep_size_}; }
  // The ranks of data-parallel replica 0 (ranks 0 .. E-1) write the checkpoint's shards.
  bool writes_shard() const { return world_.rank() < ep_size_; }
  Comm& world() { return world_; }

  // What Model::set_parallel needs: the batch over the world, the experts over the group (null when
  // nothing is split).
  ModelParallel model_parallel();

  // This rank's sequences [begin, end) of a global batch of B.
  int64_t batch_begin(int64_t B) const { return B * world_.rank() / world_.size(); }
  int64_t batch_end(int64_t B) const { return B * (world_.rank() + 1) / world_.size(); }

  // Sums the gradients of `params` over the ranks that share them: FFN experts' over their replicas,
  // every other over all ranks. `expert[i]` says which params[i] is. Returns the seconds it took.
  double sum_gradients(const std::vector<ParamRef>& params, const std::vector<bool>& expert);

  // The global L2 norm of the (summed) gradients: dense ones once, experts' over the group.
  float grad_norm(const std::vector<ParamRef>& params, const std::vector<bool>& expert);

  // Throws JobWideError on every rank when the weights differ where they should be equal: the dense
  // ones between any two ranks, an expert's between its replicas.
  void check_same_weights(const std::vector<ParamRef>& params, const std::vector<bool>& expert);

 private:
  Comm& world_;
  int ep_size_;
  std::unique_ptr<Comm> experts_, replicas_;
  std::vector<float> staging_;
};

}  // namespace moepp
