// InferWeights construction from training parameters or a checkpoint, tensor by tensor (see
// infer_weights.h).
#include "infer/infer_weights.h"

#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "core/error.h"
#include "core/fnv1a.h"
#include "core/q4_blocks.h"
#include "io/safetensors.h"
#include "io/weight_source.h"
#include "model/ignored_buffers.h"

namespace moepp {
namespace {

// One checkpoint tensor and where it goes: a fp32 tensor, or a WeightMatrix built from fp32 data.
struct Slot {
  std::string name;
  std::vector<int64_t> shape;
  Tensor* dense = nullptr;         // kept fp32
  WeightMatrix* matrix = nullptr;  // converted to the weight dtype
  bool optional = false;           // layer 0's gate_map (never used)
  // Neither dense nor matrix: an FFN expert outside the shard (checked, not read).
};

// Every tensor of cfg's model (param_specs), in checkpoint order, bound to its place in w: the large
// matrices to WeightMatrix, the small tensors (allocated here) kept fp32.
std::vector<Slot> plan(InferWeights& w, const ModelConfig& c, ExpertShard shard) {
  w.shard = shard;
  w.layers.assign(c.n_layers, {});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const MoeConfig mc = c.layer_moe(static_cast<int>(i), false);
    std::tie(w.layers[i].ffn_first, w.layers[i].ffn_end) = shard.range(mc.n_ffn());
    w.layers[i].up.assign(mc.n_ffn(), {});
    w.layers[i].down.assign(mc.n_ffn(), {});
    w.layers[i].moe_small.const_wg.resize(mc.n_constant);
    w.layers[i].moe_small.const_v.resize(mc.n_constant);
  }
  std::vector<Slot> slots;
  for (const ParamSpec& p : param_specs(c)) {
    Slot s{p.name, p.shape, nullptr, nullptr, p.optional};
    InferWeights::Layer* l = p.layer >= 0 ? &w.layers[p.layer] : nullptr;
    switch (p.kind) {
      case ParamKind::kEmbed: s.dense = &w.embed; break;
      case ParamKind::kAttnNorm: s.dense = &l->attn_norm; break;
      case ParamKind::kWq: s.matrix = &l->wq; break;
      case ParamKind::kWk: s.matrix = &l->wk; break;
      case ParamKind::kWv: s.matrix = &l->wv; break;
      case ParamKind::kWo: s.matrix = &l->wo; break;
      case ParamKind::kMlpNorm: s.dense = &l->mlp_norm; break;
      case ParamKind::kMoe:
        if (p.moe.kind == MoeParamKind::kUp || p.moe.kind == MoeParamKind::kDown) {
          if (p.moe.index >= l->ffn_first && p.moe.index < l->ffn_end)
            s.matrix = p.moe.kind == MoeParamKind::kUp ? &l->up[p.moe.index] : &l->down[p.moe.index];
        } else s.dense = l->moe_small.slot(p.moe.kind, p.moe.index);  // router, gate_map, constant experts
        break;
      case ParamKind::kFinalNorm: s.dense = &w.final_norm; break;
      case ParamKind::kLmHead: s.matrix = &w.lm_head; break;
    }
    if (s.dense) *s.dense = Tensor(p.shape);
    slots.push_back(std::move(s));
  }
  return slots;
}

// The stored layout of a quantised matrix of shape [O, I] in dtype d: the data tensor's dtype and
// shape, the scales' dtype and shape.
struct QuantLayout {
  io::DType data_dtype;
  std::vector<int64_t> data_shape;
  io::DType scale_dtype;
  std::vector<int64_t> scale_shape;
};

QuantLayout quant_layout(WeightDType d, const std::vector<int64_t>& shape) {
  const int64_t O = shape[0], I = shape[1];
  if (d == WeightDType::kInt8) return {io::DType::kI8, {O, I}, io::DType::kF32, {O}};
  return {io::DType::kU8, {O, q4_blocks(I) * 16}, io::DType::kF16, {O, q4_blocks(I)}};
}

// Reads the quantised matrix `name` (data + scales, validated against the layout of `stored`) into
// *m when m is not null: in place when owner keeps the mapping alive, else copied.
void load_quantised(WeightMatrix* m, const io::WeightSource& src, const std::string& name,
                    const std::vector<int64_t>& shape, WeightDType wanted, const std::shared_ptr<const void>& owner) {
  const std::string sname = name + kQuantScalesSuffix;
  const io::WeightInfo info = src.info(name), sinfo = src.info(sname);
  const WeightDType stored = info.dtype == io::DType::kI8 ? WeightDType::kInt8 : WeightDType::kQ4;
  check(info.dtype == io::DType::kI8 || info.dtype == io::DType::kU8,
        src.source() + ": tensor '" + name + "' has '" + sname + "' but dtype " + io::dtype_name(info.dtype) +
            " (quantised matrices are I8 or U8)");
  const QuantLayout ql = quant_layout(stored, shape);
  check(info.shape == ql.data_shape && sinfo.dtype == ql.scale_dtype && sinfo.shape == ql.scale_shape,
        src.source() + ": quantised tensor '" + name + "' (" + weight_dtype_name(stored) + ") has data " +
            shape_str(info.shape) + " and scales " + io::dtype_name(sinfo.dtype) + " " + shape_str(sinfo.shape) +
            "; a " + shape_str(shape) + " matrix needs " + shape_str(ql.data_shape) + " and " +
            io::dtype_name(ql.scale_dtype) + " " + shape_str(ql.scale_shape));
  check(stored == wanted, src.source() + ": the checkpoint's matrices are stored as " + weight_dtype_name(stored) +
                              " (moepp convert --dtype " + weight_dtype_name(stored) + "); load it with --dtype " +
                              weight_dtype_name(stored) + ", not " + weight_dtype_name(wanted));
  if (m == nullptr) return;
  const uint8_t* data = src.mapped(name);
  const uint8_t* scales = src.mapped(sname);
  check(data != nullptr && scales != nullptr, src.source() + ": quantised tensor '" + name + "' is not contiguous");
  const WeightMatrix view = WeightMatrix::view(stored, data, scales, shape[0], shape[1], owner);
  *m = owner ? view : view.owned_copy();
}

void hash_tensor(Fnv1a64& h, const Tensor& t) {
  const int64_t rank = static_cast<int64_t>(t.shape.size());
  h.add(&rank, sizeof rank);
  h.add(t.shape.data(), sizeof(int64_t) * t.shape.size());
  h.add(t.data.data(), sizeof(float) * t.data.size());
}

}  // namespace

bool is_weight_matrix(const ParamSpec& p) {
  switch (p.kind) {
    case ParamKind::kWq:
    case ParamKind::kWk:
    case ParamKind::kWv:
    case ParamKind::kWo:
    case ParamKind::kLmHead: return true;
    case ParamKind::kMoe: return p.moe.kind == MoeParamKind::kUp || p.moe.kind == MoeParamKind::kDown;
    default: return false;
  }
}

void add_stored_matrix(io::SafetensorsWriter& w, const std::string& name, int64_t O, int64_t I, WeightDType d,
                       std::function<WeightMatrix()> make) {
  // One of the matrix's tensors: `scales` picks the scales, else the data.
  auto part = [name, O, I, d, make](bool scales) {
    return [name, O, I, d, make, scales](uint8_t* out) {
      const WeightMatrix m = make();
      check(m.rows() == O && m.cols() == I && m.dtype() == d,
            "add_stored_matrix: " + name + ": the matrix made is not the one declared");
      const WeightMatrix::Stored st = m.stored();
      if (scales)
        std::memcpy(out, st.scales, st.scale_bytes);
      else
        std::memcpy(out, st.data, st.data_bytes);
    };
  };
  const std::vector<int64_t> shape = {O, I};
  switch (d) {
    case WeightDType::kF32: w.add_lazy(name, io::DType::kF32, shape, part(false)); return;
    case WeightDType::kBF16: w.add_lazy(name, io::DType::kBF16, shape, part(false)); return;
    case WeightDType::kInt8:
    case WeightDType::kQ4: {
      const QuantLayout ql = quant_layout(d, shape);
      w.add_lazy(name, ql.data_dtype, ql.data_shape, part(false));
      w.add_lazy(name + kQuantScalesSuffix, ql.scale_dtype, ql.scale_shape, part(true));
      return;
    }
  }
}

InferWeights InferWeights::from_params(const ModelConfig& cfg, const ModelParams& p, WeightDType d, ExpertShard shard) {
  InferWeights w;
  w.dtype = d;
  std::vector<Slot> slots = plan(w, cfg, shard);
  const auto named = p.named(cfg);
  std::map<std::string, const Tensor*> have(named.begin(), named.end());
  for (const Slot& s : slots) {
    if (!s.dense && !s.matrix) continue;  // an FFN expert outside the shard
    auto it = have.find(s.name);
    if (it == have.end() || it->second->empty()) {
      if (s.optional) continue;
      throw Error("InferWeights: the parameters lack '" + s.name + "'");
    }
    const Tensor& t = *it->second;
    check(t.shape == s.shape, "InferWeights: '" + s.name + "' has shape " + shape_str(t.shape) + ", expected " +
                                  shape_str(s.shape));
    if (s.dense) *s.dense = t;
    else *s.matrix = WeightMatrix::from_f32(t.ptr(), s.shape[0], s.shape[1], d);
  }
  return w;
}

InferWeights InferWeights::load(const ModelConfig& cfg, const io::WeightSource& src, WeightDType d,
                                ExpertShard shard) {
  return load_impl(cfg, src, d, nullptr, shard);
}

InferWeights InferWeights::load(const ModelConfig& cfg, std::shared_ptr<const io::WeightSource> src, WeightDType d,
                                ExpertShard shard) {
  check(src != nullptr, "InferWeights::load: no weight source");
  const io::WeightSource& ref = *src;
  return load_impl(cfg, ref, d, std::move(src), shard);
}

InferWeights InferWeights::load_impl(const ModelConfig& cfg, const io::WeightSource& src, WeightDType d,
                                     std::shared_ptr<const io::WeightSource> owner, ExpertShard shard) {
  InferWeights w;
  w.dtype = d;
  std::vector<Slot> slots = plan(w, cfg, shard);
  std::set<std::string> expected;
  std::vector<float> buf;
  for (const Slot& s : slots) {
    expected.insert(s.name);
    if (!src.contains(s.name)) {
      if (s.optional) continue;
      throw Error(src.source() + ": missing tensor '" + s.name + "'");
    }
    if (src.contains(s.name + kQuantScalesSuffix)) {  // a quantised matrix
      expected.insert(s.name + kQuantScalesSuffix);
      check(s.dense == nullptr, src.source() + ": tensor '" + s.name + "' is quantised but is not a weight matrix");
      load_quantised(s.matrix, src, s.name, s.shape, d, owner);
      continue;
    }
    const io::WeightInfo info = src.info(s.name);
    if (info.dtype == io::DType::kI8 || info.dtype == io::DType::kU8)
      throw Error(src.source() + ": tensor '" + s.name + "' is " + io::dtype_name(info.dtype) + " but '" + s.name +
                  kQuantScalesSuffix + "' is missing");
    if (info.shape != s.shape)
      throw Error(src.source() + ": tensor '" + s.name + "' has shape " + shape_str(info.shape) + ", expected " +
                  shape_str(s.shape));
    if (!s.dense && !s.matrix) continue;  // an FFN expert outside the shard: never read
    if (s.dense) {
      src.read_f32(s.name, s.dense->ptr());
      continue;
    }
    // BF16 stored, BF16 wanted, and a mapping to keep alive: read in place, no copy.
    const uint8_t* in_place =
        owner && d == WeightDType::kBF16 && info.dtype == io::DType::kBF16 ? src.mapped(s.name) : nullptr;
    if (in_place != nullptr && reinterpret_cast<uintptr_t>(in_place) % alignof(uint16_t) == 0) {
      *s.matrix = WeightMatrix::bf16_view(in_place, s.shape[0], s.shape[1], owner);
    } else {
      buf.resize(Tensor::numel_of(s.shape));
      src.read_f32(s.name, buf.data());
      *s.matrix = WeightMatrix::from_f32(buf.data(), s.shape[0], s.shape[1], d);
    }
  }
  check_no_unexpected_tensors(src.names(), expected, src.source());
  return w;
}

uint64_t InferWeights::dense_hash() const {
  Fnv1a64 h;
  hash_tensor(h, embed);
  for (const Layer& l : layers) {
    hash_tensor(h, l.attn_norm);
    hash_tensor(h, l.mlp_norm);
    for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo}) m->add_to_hash(h);
    const MoeParams& p = l.moe_small;
    for (const Tensor* t : {&p.wg, &p.wg0, &p.wg2, &p.gate_map}) hash_tensor(h, *t);
    for (const auto* v : {&p.const_wg, &p.const_v})
      for (const Tensor& t : *v) hash_tensor(h, t);
  }
  hash_tensor(h, final_norm);
  lm_head.add_to_hash(h);
  return h.value();
}

namespace {

// Calls f on every large matrix of w (WeightMatrix: the LM head, then per layer the attention
// projections and the FFN experts held); Weights is InferWeights or const InferWeights.
template <class Weights, class F>
void for_each_matrix(Weights& w, F f) {
  f(w.lm_head);
  for (auto& l : w.layers) {
    for (auto* m : {&l.wq, &l.wk, &l.wv, &l.wo}) f(*m);
    for (auto& m : l.up) f(m);
    for (auto& m : l.down) f(m);
  }
}

}  // namespace

size_t InferWeights::mapped_bytes() const {
  size_t n = 0;
  for_each_matrix(*this, [&](const WeightMatrix& m) { n += m.mapped_bytes(); });
  return n;
}

size_t InferWeights::pack_bf16_for_many_rows() {
  size_t n = 0;
  for_each_matrix(*this, [&](WeightMatrix& m) { n += m.pack_for_many_rows(); });
  return n;
}

size_t InferWeights::bytes() const {
  size_t n = (embed.numel() + final_norm.numel()) * 4;
  for_each_matrix(*this, [&](const WeightMatrix& m) { n += m.bytes(); });
  for (const Layer& l : layers) {
    n += (l.attn_norm.numel() + l.mlp_norm.numel()) * 4;
    const MoeParams& p = l.moe_small;
    for (const Tensor* t : {&p.wg, &p.wg0, &p.wg2, &p.gate_map}) n += t->numel() * 4;
    for (const auto* v : {&p.const_wg, &p.const_v})
      for (const Tensor& t : *v) n += t.numel() * 4;
  }
  return n;
}

}  // namespace moepp
