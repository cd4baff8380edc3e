// sgemm backends (OpenBLAS, oneDNN) behind one row-major interface; see gemm.h for the threading contract.
#include "core/gemm.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>
#include <string>

#include "core/error.h"

namespace moepp {
namespace {

// Default: kAuto (measured fastest on the target, see auto_backend below). MOEPP_GEMM_BACKEND=openblas|
// onednn|auto in the environment overrides it for a whole run (A/B comparisons of the layer and the model
// without a rebuild); an unknown value is reported on stderr and ignored.
GemmBackend initial_backend() {
  const char* env = std::getenv("MOEPP_GEMM_BACKEND");
  if (env == nullptr || *env == '\0') return GemmBackend::kAuto;
  const std::string v(env);
  if (v == "openblas") return GemmBackend::kOpenBLAS;
  if (v == "onednn") return GemmBackend::kOneDNN;
  if (v == "auto") return GemmBackend::kAuto;
  std::fprintf(stderr, "moepp: warning: ignoring MOEPP_GEMM_BACKEND=%s (expected openblas, onednn or auto)\n", env);
  return GemmBackend::kAuto;
}

std::atomic<GemmBackend> g_backend{initial_backend()};

// OpenBLAS runs single-threaded: moepp's OpenMP regions own the cores (two thread pools spinning side
// by side halve throughput on this machine).
struct OpenBlasSingleThreaded {
  OpenBlasSingleThreaded() { openblas_set_num_threads(1); }
};
const OpenBlasSingleThreaded g_openblas_single_threaded;

void sgemm_openblas(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

// oneDNN: Debian's libdnnl is built with the OpenMP runtime (DNNL_CPU_RUNTIME == OMP, linked to libgomp,
// the runtime moepp itself uses). It sizes its team as omp_in_parallel() ? 1 : omp_get_max_threads():
// inside an active parallel region of ours it is single-threaded by itself, but from serial code (or from
// a one-thread region, which is inactive) it would fork a team of all cores. For those calls we set the
// calling thread's nthreads-var to 1 for the duration of the call (a per-task ICV: other threads and
// later regions are not affected once it is restored).
class OmpSerialScope {
 public:
  OmpSerialScope() {
    if (!omp_in_parallel()) {
      saved_ = omp_get_max_threads();
      if (saved_ != 1) omp_set_num_threads(1);
    }
  }
  ~OmpSerialScope() {
    if (saved_ > 1) omp_set_num_threads(saved_);
  }
  OmpSerialScope(const OmpSerialScope&) = delete;
  OmpSerialScope& operator=(const OmpSerialScope&) = delete;

 private:
  int saved_ = 0;
};

void sgemm_onednn(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  dnnl_status_t st;
  {
    OmpSerialScope serial;
    st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  // Only bad arguments (leading dimensions) fail; the callers' shapes are checked, so this is a contract
  // violation. (Thrown from inside a parallel region it ends the program, which is what it deserves.)
  if (st != dnnl_success)
    throw Error("dnnl_sgemm failed (status " + std::to_string(static_cast<int>(st)) + ", M=" +
                std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + ")");
}

// The kAuto rule, measured on the 2-core AVX2 target (Zen 3), single-threaded calls two at a time, as
// the expert loops make them (`moepp bench gemm`, and per-thread CPU time to see through the machine's
// noise). Where neither library is clearly ahead, OpenBLAS (the reference backend) is kept.
// - A·B^T (forward projections x·W^T): oneDNN up to 64 rows of C (1.0-1.3x, mostly ~1.1x); at 128 rows
//   the two are level (0.91-1.11x), from 192 rows OpenBLAS (oneDNN 0.8-0.95x at 192-256, level at 512+).
// - A^T·B (weight gradients dW = dH^T·X, K = tokens) with beta == 0 and more than 256 rows of C: oneDNN.
//   With beta == 0 OpenBLAS zeroes C in a separate pass first: oneDNN is 1.6-2x faster at K = 16,
//   1.1-1.5x at K = 64-128, level (0.9-1.1x) from K = 256. With beta == 1 (accumulating) the two are
//   level. Up to 256 rows oneDNN takes another path, 0.5-0.85x at K = 64-256.
// - A·B (input gradients dX = dH·W): OpenBLAS; oneDNN is 0.5x at N = 4096, K = 1536 (the 1536x4096
//   down projection), 0.8-0.95x at most other MoE shapes, ahead (1.1-1.3x) only at N = 768, M <= 64.
//
// On CPUs where oneDNN runs AVX-512 kernels (its effective ISA includes avx512_core) the rule is simply
// oneDNN: Debian's OpenBLAS 0.3.21 does not recognise newer AVX-512 CPUs (here an AMD EPYC with AVX-512,
// Zen 5) and runs its Haswell (AVX2) kernels there, while oneDNN's AVX-512 kernels reach 250-370
// GFLOP/s on 2 cores: 1.6-3x OpenBLAS at every expert shape of `moepp bench gemm` but one (16 rows of
// the down projection, 0.85-0.98x), and 1.6x on a whole training step (`moepp bench train --profile`).
bool onednn_avx512() {
  static const bool v =
      (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core;
  return v;
}

GemmBackend auto_backend(bool ta, bool tb, int64_t M, float beta) {
  if (onednn_avx512()) return GemmBackend::kOneDNN;
  if (!ta && tb) return M <= 64 ? GemmBackend::kOneDNN : GemmBackend::kOpenBLAS;
  if (ta && !tb && beta == 0.0f && M > 256) return GemmBackend::kOneDNN;
  return GemmBackend::kOpenBLAS;
}

}  // namespace

const char* gemm_auto_rule() { return onednn_avx512() ? "avx512: onednn" : "avx2: by shape"; }

void set_gemm_backend(GemmBackend b) { g_backend.store(b); }
GemmBackend gemm_backend() { return g_backend.load(); }

const char* gemm_backend_name(GemmBackend b) {
  switch (b) {
    case GemmBackend::kOpenBLAS: return "openblas";
    case GemmBackend::kOneDNN: return "onednn";
    case GemmBackend::kAuto: return "auto";
  }
  return "?";
}

GemmBackend parse_gemm_backend(const std::string& name) {
  if (name == "openblas") return GemmBackend::kOpenBLAS;
  if (name == "onednn") return GemmBackend::kOneDNN;
  if (name == "auto") return GemmBackend::kAuto;
  throw Error("unknown GEMM backend '" + name + "' (expected openblas, onednn or auto)");
}

void sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  GemmBackend b = g_backend.load(std::memory_order_relaxed);
  if (b == GemmBackend::kAuto) b = auto_backend(ta, tb, M, beta);
  if (b == GemmBackend::kOneDNN)
    sgemm_onednn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    sgemm_openblas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void sgemm_parallel(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (nt <= 1 || M * N * std::max<int64_t>(K, 1) < (int64_t{1} << 18)) {
    sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the larger side of C. (With oneDNN's AVX-512 kernels, two concurrent 512-row slices of the
  // lm_head logits product, 1024 x 4096 x 256, ran at 80 GFLOP/s against 340 for two 2048-column
  // slices of it; rows were split before whenever M >= 64 * threads.)
  if (M >= N) {  // split rows of C (rows of op(A))
    const int64_t chunk = (M + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int t = 0; t < nt; ++t) {
      const int64_t m0 = t * chunk, m1 = std::min(M, m0 + chunk);
      if (m0 >= m1) continue;
      const float* a = ta ? A + m0 : A + m0 * lda;
      sgemm(ta, tb, m1 - m0, N, K, alpha, a, lda, B, ldb, beta, C + m0 * ldc, ldc);
    }
  } else {  // split columns of C (columns of op(B))
    const int64_t chunk = ((N + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int t = 0; t < nt; ++t) {
      const int64_t n0 = t * chunk, n1 = std::min(N, n0 + chunk);
      if (n0 >= n1) continue;
      const float* b = tb ? B + n0 * ldb : B + n0;
      sgemm(ta, tb, M, n1 - n0, K, alpha, A, lda, b, ldb, beta, C + n0, ldc);
    }
  }
}

namespace {

// A bf16 matmul primitive: C [M, N] (+= with accumulate) = A [M, K] . W, W described by `weights` (the
// plain [N, K] row-major layout, or a packed one), A and C row-major with C's rows ldc apart; M fixed or
// DNNL_RUNTIME_DIM_VAL. Scratch memory is the caller's (user scratchpad mode), so concurrent calls do
// not share it.
struct Bf16Matmul {
  dnnl::matmul prim;
  dnnl::memory::desc weights, scratch;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

Bf16Matmul make_bf16_matmul(int64_t M, const dnnl::memory::desc& weights, int64_t N, int64_t K, int64_t ldc,
                            bool accumulate) {
  using dt = dnnl::memory::data_type;
  const dnnl::memory::desc src({M, K}, dt::bf16, dnnl::memory::dims{K, 1});
  const dnnl::memory::desc dst({M, N}, dt::f32, dnnl::memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), attr, cpu_engine());
  return Bf16Matmul{dnnl::matmul(pd), weights, pd.scratchpad_desc()};
}

// gemm_bf16_parallel's primitives, one per (N, K, ldc, accumulate), with M a run-time dimension (oneDNN
// then takes its jit gemm, which measured 480-590 GFLOP/s here at M = 77-300 against 170-280 for sgemm).
const Bf16Matmul& bf16_matmul(int64_t N, int64_t K, int64_t ldc, bool accumulate) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Bf16Matmul> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find({N, K, ldc, accumulate});
  if (it != cache.end()) return it->second;
  const dnnl::memory::desc plain({K, N}, dnnl::memory::data_type::bf16, dnnl::memory::dims{1, K});  // B [N, K]
  return cache.emplace(std::make_tuple(N, K, ldc, accumulate),
                       make_bf16_matmul(DNNL_RUNTIME_DIM_VAL, plain, N, K, ldc, accumulate))
      .first->second;
}

// Runs mm on M rows of A into C (the weights' memory given), with this thread's scratch memory.
void run_bf16_matmul(const Bf16Matmul& mm, float* C, const uint16_t* A, const dnnl::memory& weights, int64_t M,
                     int64_t N, int64_t K, int64_t ldc) {
  using dt = dnnl::memory::data_type;
  dnnl::engine& eng = cpu_engine();
  thread_local std::vector<uint8_t> scratch;
  scratch.resize(std::max<size_t>(mm.scratch.get_size(), 1));
  const dnnl::memory a({{M, K}, dt::bf16, dnnl::memory::dims{K, 1}}, eng, const_cast<uint16_t*>(A));
  const dnnl::memory c({{M, N}, dt::f32, dnnl::memory::dims{ldc, 1}}, eng, C);
  const dnnl::memory s(mm.scratch, eng, scratch.data());
  dnnl::stream st(eng);
  mm.prim.execute(st, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, c}, {DNNL_ARG_SCRATCHPAD, s}});
  st.wait();
}

}  // namespace

bool gemm_bf16_native() {
  static const bool v = [] {
    const char* env = std::getenv("MOEPP_BF16_GEMM");
    const std::string e = env ? env : "1";
    check(e == "0" || e == "1", "MOEPP_BF16_GEMM must be 0 (products of many rows in fp32) or 1 (the default), got '" + e + "'");
    return e == "1" &&
           (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
  }();
  return v;
}

void gemm_bf16_parallel(int64_t M, int64_t N, int64_t K, const uint16_t* A, const uint16_t* B, float* C,
                        int64_t ldc, bool accumulate) {
  check(M >= 0 && N > 0 && K > 0 && ldc >= N, "gemm_bf16_parallel: bad shape");
  if (M == 0) return;
  const Bf16Matmul& mm = bf16_matmul(N, K, ldc, accumulate);
  run_bf16_matmul(mm, C, A, dnnl::memory(mm.weights, cpu_engine(), const_cast<uint16_t*>(B)), M, N, K, ldc);
}

namespace {

using dnnl_dt = dnnl::memory::data_type;

// The fixed-M bf16 matmul primitives over packed weights, one per (M, N, K, ldc, accumulate), shared by
// every Bf16PackedWeights of that shape (they all have the same packed layout, the one pack() takes).
// Primitive descriptors cost 0.3-0.8 ms to make, so they are kept.
const Bf16Matmul& packed_matmul(int64_t M, const dnnl::memory::desc& wei, int64_t N, int64_t K, int64_t ldc,
                                bool accumulate) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, bool>, Bf16Matmul> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(M, N, K, ldc, accumulate);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  try {
    return cache.emplace(key, make_bf16_matmul(M, wei, N, K, ldc, accumulate)).first->second;
  } catch (const dnnl::error& e) {
    throw Error("Bf16PackedWeights: oneDNN has no bf16 matmul of " + std::to_string(M) +
                " rows over the packed layout of a " + std::to_string(N) + " x " + std::to_string(K) +
                " matrix (" + e.what() + ")");
  }
}

}  // namespace

struct Bf16PackedWeights::Impl {
  dnnl::memory::desc layout;
  dnnl::memory data;  // owns the packed copy
};

Bf16PackedWeights::Bf16PackedWeights(int64_t N, int64_t K, std::unique_ptr<Impl> impl)
    : N_(N), K_(K), impl_(std::move(impl)) {}
Bf16PackedWeights::~Bf16PackedWeights() = default;

size_t Bf16PackedWeights::bytes() const { return impl_->layout.get_size(); }

std::shared_ptr<const Bf16PackedWeights> Bf16PackedWeights::pack(const uint16_t* B, int64_t N, int64_t K) {
  check(B != nullptr && N > 0 && K > 0, "Bf16PackedWeights::pack: bad shape or null weights");
  if (!gemm_bf16_native()) return nullptr;
  const dnnl::memory::desc plain({K, N}, dnnl_dt::bf16, dnnl::memory::dims{1, K});  // B [N, K] row-major
  const dnnl::memory::desc any({K, N}, dnnl_dt::bf16, dnnl::memory::format_tag::any);
  dnnl::memory::desc layout;
  try {
    // The layout oneDNN picks for a product of kMaxRows rows: the same for every M (checked on this
    // project's machines; every fixed-M primitive is made for exactly this layout, and one that oneDNN
    // cannot make throws moepp::Error).
    layout = dnnl::matmul::primitive_desc(
                 dnnl::matmul::desc(dnnl::memory::desc({kMaxRows, K}, dnnl_dt::bf16, dnnl::memory::dims{K, 1}), any,
                                    dnnl::memory::desc({kMaxRows, N}, dnnl_dt::f32, dnnl::memory::dims{N, 1})),
                 cpu_engine())
                 .weights_desc();
  } catch (const dnnl::error&) {
    return nullptr;
  }
  if (layout == plain) return nullptr;  // nothing to gain over gemm_bf16_parallel
  auto impl = std::make_unique<Impl>();
  impl->layout = layout;
  impl->data = dnnl::memory(layout, cpu_engine());
  dnnl::stream st(cpu_engine());
  dnnl::memory src(plain, cpu_engine(), const_cast<uint16_t*>(B));
  dnnl::reorder(src, impl->data).execute(st, src, impl->data);
  st.wait();
  return std::shared_ptr<const Bf16PackedWeights>(new Bf16PackedWeights(N, K, std::move(impl)));
}

void Bf16PackedWeights::multiply(float* C, const uint16_t* A, int64_t M, int64_t ldc, bool accumulate) const {
  check(M >= 0 && ldc >= N_, "Bf16PackedWeights::multiply: bad shape");
  for (int64_t m0 = 0; m0 < M; m0 += kMaxRows) {
    const int64_t rows = std::min(kMaxRows, M - m0);
    const Bf16Matmul& mm = packed_matmul(rows, impl_->layout, N_, K_, ldc, accumulate);
    run_bf16_matmul(mm, C + m0 * ldc, A + m0 * K_, impl_->data, rows, N_, K_, ldc);
  }
}

}  // namespace moepp
