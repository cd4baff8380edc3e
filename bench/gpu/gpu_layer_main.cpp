// moepp_gpu_layer: the golden I/O of one MoE++ layer (docs/layer.md, "Golden I/O") computed by the GPU
// layer (src/gpu/), with the files `moepp layer` reads and writes (cli/layer_files.h), so that the
// PyTorch parity test (tests/python/gpu_layer_parity.py) checks it the same way.
//   moepp_gpu_layer --config C.json --weights W.safetensors --inputs I.safetensors --out O.safetensors
//                   [--precision f32|bf16] [--gemm per-expert|grouped]
//                   [--modes f32:per-expert,f32:grouped,bf16:per-expert ...]
//   moepp_gpu_layer --devices     one JSON line: {"devices": N, "name": ..., "why": ...}
// --modes runs the layer once per precision:gemm pair in one process (one CUDA start for all) and
// writes O.<precision>.<gemm>.safetensors for each (O without its .safetensors ending); it replaces
// --precision and --gemm.
// The files and the config are checked before the device is touched; exit 1 with a message on error.
#include <cstdio>
#include <sstream>
#include <vector>
#include <nlohmann/json.hpp>

#include "cli/layer_files.h"
#include "core/error.h"
#include "gpu/gpu_device.h"
#include "gpu/gpu_moe_layer.h"
#include "gpu_args.h"

namespace moepp {
namespace {

// Runs `layer` on the files' inputs (forward, and backward with grad_y) and writes the results to `out`.
void run_layer(const std::string& out, const gpu::GpuMoeLayer& layer, const cli::LayerFiles& in,
               const gpu::GpuMoeParams& prm, gpu::GpuContext& ctx) {
  const MoeConfig& cfg = in.cfg;
  const int64_t T = in.T(), D = cfg.hidden, E = cfg.n_experts, W = cfg.slot_width();
  gpu::DeviceBuffer<float> x, zp, y(T * D);
  gpu::upload(x, in.x.data, ctx.s());
  if (cfg.uses_residual()) gpu::upload(zp, in.z_prev.data, ctx.s());
  gpu::GpuMoeState st;
  layer.forward(y.get(), st, x.get(), zp.get(), prm, T, ctx);

  cli::LayerResults r;
  r.W = W;
  r.y = Tensor({T, D});
  gpu::download(r.y.ptr(), y.get(), T * D, ctx.s());
  r.router_logits = Tensor({T, E});
  gpu::download(r.router_logits.ptr(), st.z.get(), T * E, ctx.s());
  r.ids = gpu::download(st.ids.get(), T * W, ctx.s());
  r.w = gpu::download(st.w.get(), T * W, ctx.s());
  const std::vector<uint8_t> kept = gpu::download(st.kept.get(), T * W, ctx.s());
  r.kept.assign(kept.begin(), kept.end());
  r.aux_loss = st.aux_loss;
  if (in.backward) {
    gpu::DeviceBuffer<float> dy, dzo, dx(T * D), dzp(T * E);
    gpu::upload(dy, in.dy.data, ctx.s());
    if (!in.dz_out.empty()) gpu::upload(dzo, in.dz_out.data, ctx.s());
    gpu::GpuMoeParams g = gpu::GpuMoeParams::zeros(cfg, ctx.s());
    gpu::GpuMoeScratch sc;
    layer.backward(dx.get(), dzp.get(), g, sc, dy.get(), in.dz_out.empty() ? nullptr : dzo.get(), st, prm, ctx);
    r.dx = Tensor({T, D});
    gpu::download(r.dx.ptr(), dx.get(), T * D, ctx.s());
    if (cfg.uses_residual()) {
      r.dz_prev = Tensor({T, E});
      gpu::download(r.dz_prev.ptr(), dzp.get(), T * E, ctx.s());
    }
    r.grads = MoeParams::zeros(cfg);
    g.download(r.grads, cfg, ctx.s());
  }
  cli::write_layer_results(out, in, r);
}

int run(int argc, char** argv) {
  const gpu_cli::Args args(argc, argv,
                           {"--config", "--weights", "--inputs", "--out", "--precision", "--gemm", "--modes"},
                           {"--devices"});
  if (args.flag("--devices")) {
    std::string why;
    const int n = gpu::device_count(&why);
    nlohmann::json j = {{"devices", n}, {"why", why}, {"name", n > 0 ? gpu::device_description(0) : ""}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  struct Run {
    gpu::Precision prec;
    gpu::GroupedGemmMode gemm;
    std::string out;
  };
  const std::string out = args.require("--out");
  std::vector<Run> runs;
  if (args.has("--modes")) {
    if (args.has("--precision") || args.has("--gemm")) throw Error("--modes replaces --precision and --gemm");
    const std::string suffix = ".safetensors";
    const std::string stem =
        out.size() > suffix.size() && out.compare(out.size() - suffix.size(), suffix.size(), suffix) == 0
            ? out.substr(0, out.size() - suffix.size())
            : out;
    std::stringstream ss(args.get("--modes", ""));
    std::string item;
    while (std::getline(ss, item, ',')) {
      const size_t colon = item.find(':');
      if (colon == std::string::npos) throw Error("--modes: expected precision:gemm pairs, got '" + item + "'");
      const std::string p = item.substr(0, colon), g = item.substr(colon + 1);
      runs.push_back({gpu::parse_precision(p, "--modes"), gpu::parse_grouped_gemm_mode(g, "--modes"),
                      stem + "." + p + "." + g + suffix});
    }
    if (runs.empty()) throw Error("--modes: empty list");
  } else {
    runs.push_back({gpu::parse_precision(args.get("--precision", "f32"), "--precision"),
                    gpu::parse_grouped_gemm_mode(args.get("--gemm", "per-expert"), "--gemm"), out});
  }
  const cli::LayerFiles in = cli::read_layer_files(args.require("--config"), args.require("--weights"),
                                                   args.require("--inputs"));
  const MoeConfig& cfg = in.cfg;
  gpu::check_gpu_supported(cfg, args.require("--config"));
  bool any_bf16 = false;
  for (const Run& r : runs) any_bf16 |= r.prec == gpu::Precision::kBF16;
  std::string why;
  if (gpu::device_count(&why) == 0) throw Error("no CUDA device: " + why);

  gpu::GpuContext ctx;
  const gpu::GpuMoeParams prm =
      gpu::GpuMoeParams::upload(in.params, cfg, any_bf16 ? gpu::Precision::kBF16 : gpu::Precision::kF32, ctx.s());
  for (const Run& run : runs) run_layer(run.out, gpu::GpuMoeLayer(cfg, {run.prec, run.gemm}), in, prm, ctx);
  return 0;
}

}  // namespace
}  // namespace moepp

int main(int argc, char** argv) { return moepp::gpu_cli::guarded_main("moepp_gpu_layer", moepp::run, argc, argv); }
