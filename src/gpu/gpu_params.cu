// Device copies of an MoE++ layer's tensors and their BF16 expert weights (see gpu_params.h).
#include "gpu/gpu_params.h"

#include "core/error.h"
#include "gpu/cuda_check.h"

namespace moepp::gpu {
namespace {

__global__ void convert_to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

// Stacks tensors of equal size into one buffer (or unstacks it): the per-expert tensors of MoeParams.
void upload_stacked(DeviceBuffer<float>& dst, const std::vector<Tensor>& ts, cudaStream_t s) {
  const size_t each = ts.empty() ? 0 : ts[0].numel();
  dst.ensure(each * ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    check(ts[i].numel() == each, "GpuMoeParams: expert tensors of different sizes");
    MOEPP_CUDA(cudaMemcpyAsync(dst.get() + i * each, ts[i].ptr(), each * sizeof(float), cudaMemcpyHostToDevice, s));
  }
}

void download_stacked(std::vector<Tensor>& ts, const DeviceBuffer<float>& src, cudaStream_t s) {
  const size_t each = ts.empty() ? 0 : ts[0].numel();
  check(src.size() == each * ts.size(), "GpuMoeParams::download: the device tensors do not match the config");
  for (size_t i = 0; i < ts.size(); ++i)
    MOEPP_CUDA(cudaMemcpyAsync(ts[i].ptr(), src.get() + i * each, each * sizeof(float), cudaMemcpyDeviceToHost, s));
}

void upload_tensor(DeviceBuffer<float>& dst, const Tensor& t, cudaStream_t s) { upload(dst, t.ptr(), t.numel(), s); }

void download_tensor(Tensor& t, const DeviceBuffer<float>& src, cudaStream_t s) {
  check(src.size() == t.numel(), "GpuMoeParams::download: the device tensors do not match the config");
  if (t.numel()) MOEPP_CUDA(cudaMemcpyAsync(t.ptr(), src.get(), t.numel() * sizeof(float), cudaMemcpyDeviceToHost, s));
}

}  // namespace

void convert_to_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 65535);
  convert_to_bf16_kernel<<<static_cast<unsigned>(blocks), 256, 0, s>>>(dst, src, n);
  launch_check("convert_to_bf16_kernel");
}

GpuMoeParams GpuMoeParams::upload(const MoeParams& p, const MoeConfig& cfg, Precision prec, cudaStream_t s) {
  check(static_cast<int64_t>(p.up.size()) == cfg.n_ffn() && static_cast<int64_t>(p.down.size()) == cfg.n_ffn() &&
            static_cast<int64_t>(p.const_wg.size()) == cfg.n_constant &&
            static_cast<int64_t>(p.const_v.size()) == cfg.n_constant,
        "GpuMoeParams::upload: the parameters are not shaped for this config");
  GpuMoeParams g;
  upload_tensor(g.wg, p.wg, s);
  upload_tensor(g.wg0, p.wg0, s);
  upload_tensor(g.wg2, p.wg2, s);
  upload_tensor(g.gate_map, p.gate_map, s);
  upload_stacked(g.up, p.up, s);
  upload_stacked(g.down, p.down, s);
  upload_stacked(g.const_wg, p.const_wg, s);
  upload_stacked(g.const_v, p.const_v, s);
  if (prec == Precision::kBF16) g.refresh_bf16(s);
  return g;
}

GpuMoeParams GpuMoeParams::zeros(const MoeConfig& cfg, cudaStream_t s) {
  GpuMoeParams g = upload(MoeParams::zeros(cfg), cfg, Precision::kF32, s);
  return g;
}

void GpuMoeParams::download(MoeParams& out, const MoeConfig& cfg, cudaStream_t s) const {
  check(static_cast<int64_t>(out.up.size()) == cfg.n_ffn() && static_cast<int64_t>(out.const_v.size()) == cfg.n_constant,
        "GpuMoeParams::download: the target is not shaped for this config");
  download_tensor(out.wg, wg, s);
  download_tensor(out.wg0, wg0, s);
  download_tensor(out.wg2, wg2, s);
  download_tensor(out.gate_map, gate_map, s);
  download_stacked(out.up, up, s);
  download_stacked(out.down, down, s);
  download_stacked(out.const_wg, const_wg, s);
  download_stacked(out.const_v, const_v, s);
  MOEPP_CUDA(cudaStreamSynchronize(s));
}

void GpuMoeParams::refresh_bf16(cudaStream_t s) {
  up_bf16.ensure(up.size());
  down_bf16.ensure(down.size());
  convert_to_bf16(up_bf16.get(), up.get(), static_cast<int64_t>(up.size()), s);
  convert_to_bf16(down_bf16.get(), down.get(), static_cast<int64_t>(down.size()), s);
}

void GpuMoeParams::zero(cudaStream_t s) {
  for (DeviceBuffer<float>* b : {&wg, &wg0, &wg2, &gate_map, &up, &down, &const_wg, &const_v})
    zero_async(b->get(), b->size(), s);
}

}  // namespace moepp::gpu
