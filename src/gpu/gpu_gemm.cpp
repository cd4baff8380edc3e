// Row-major GEMM mapping, single and grouped cuBLAS products (see gpu_gemm.h).
#include "gpu/gpu_gemm.h"

#include <algorithm>
#include <climits>

#include "core/error.h"

namespace moepp::gpu {

cudaDataType_t cuda_type(ElemType t) { return t == ElemType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }
size_t elem_size(ElemType t) { return t == ElemType::kF32 ? 4 : 2; }

namespace {

int to_int(int64_t v, const char* name, const std::string& what) {
  if (v < 0 || v > INT_MAX)
    throw Error(what + ": GEMM " + name + " = " + std::to_string(v) + " is outside cuBLAS's range [0, " +
                std::to_string(INT_MAX) + "]");
  return static_cast<int>(v);
}

}  // namespace

CublasGemmArgs to_cublas(const GemmShape& s, const std::string& what) {
  CublasGemmArgs a;
  a.m = to_int(s.n, "n", what);
  a.n = to_int(s.m, "m", what);
  a.k = to_int(s.k, "k", what);
  // Row-major X [r, c] with row stride ld is column-major X^T [c, r] with the same ld.
  const int64_t need_a = std::max<int64_t>(1, s.trans_a ? s.m : s.k);
  const int64_t need_b = std::max<int64_t>(1, s.trans_b ? s.k : s.n);
  const int64_t need_c = std::max<int64_t>(1, s.n);
  if (s.lda < need_a || s.ldb < need_b || s.ldc < need_c)
    throw Error(what + ": GEMM leading dimensions (lda " + std::to_string(s.lda) + ", ldb " + std::to_string(s.ldb) +
                ", ldc " + std::to_string(s.ldc) + ") below the minimum (" + std::to_string(need_a) + ", " +
                std::to_string(need_b) + ", " + std::to_string(need_c) + ")");
  a.op_first = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  a.op_second = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  a.ld_first = to_int(s.ldb, "ldb", what);
  a.ld_second = to_int(s.lda, "lda", what);
  a.ldc = to_int(s.ldc, "ldc", what);
  return a;
}

void gemm(cublasHandle_t h, const GemmShape& s, float alpha, const void* A, ElemType ta, const void* B, ElemType tb,
          float beta, void* C, ElemType tc, const char* what) {
  const CublasGemmArgs c = to_cublas(s, what);
  if (s.m == 0 || s.n == 0 || (s.k == 0 && beta == 1.0f)) return;
  cublas_check(cublasGemmEx(h, c.op_first, c.op_second, c.m, c.n, c.k, &alpha, B, cuda_type(tb), c.ld_first, A,
                            cuda_type(ta), c.ld_second, &beta, C, cuda_type(tc), c.ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT),
               std::string("cublasGemmEx (") + what + ")");
}

void gemm_strided_batched(cublasHandle_t h, const GemmShape& s, float alpha, const void* A, ElemType ta,
                          int64_t stride_a, const void* B, ElemType tb, int64_t stride_b, float beta, void* C,
                          ElemType tc, int64_t stride_c, int64_t batch, const char* what) {
  const CublasGemmArgs c = to_cublas(s, what);
  const int nb = to_int(batch, "batch", what);
  if (stride_a < 0 || stride_b < 0 || stride_c < 0)
    throw Error(std::string(what) + ": negative batch stride");
  if (nb == 0 || s.m == 0 || s.n == 0 || (s.k == 0 && beta == 1.0f)) return;
  cublas_check(cublasGemmStridedBatchedEx(h, c.op_first, c.op_second, c.m, c.n, c.k, &alpha, B, cuda_type(tb),
                                          c.ld_first, stride_b, A, cuda_type(ta), c.ld_second, stride_a, &beta, C,
                                          cuda_type(tc), c.ldc, stride_c, nb, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               std::string("cublasGemmStridedBatchedEx (") + what + ")");
}

const char* grouped_gemm_mode_name(GroupedGemmMode m) {
  return m == GroupedGemmMode::kPerProduct ? "per-expert" : "grouped";
}

GroupedGemmMode parse_grouped_gemm_mode(const std::string& s, const std::string& source) {
  if (s == "per-expert") return GroupedGemmMode::kPerProduct;
  if (s == "grouped") return GroupedGemmMode::kGroupedBatched;
  throw Error(source + ": unknown expert GEMM mode '" + s + "' (expected per-expert or grouped)");
}

void grouped_gemm(GroupedGemmMode mode, cublasHandle_t h, cudaStream_t stream, DeviceBuffer<const void*>& ptrs,
                  bool trans_a, bool trans_b, float alpha, float beta, const std::vector<GroupedProblem>& problems,
                  ElemType ta, ElemType tb, ElemType tc, const char* what) {
  std::vector<const GroupedProblem*> live;
  for (const GroupedProblem& p : problems)
    if (p.m > 0 && p.n > 0) live.push_back(&p);
  if (live.empty()) return;
  if (mode == GroupedGemmMode::kPerProduct) {
    for (const GroupedProblem* p : live)
      gemm(h, {trans_a, trans_b, p->m, p->n, p->k, p->lda, p->ldb, p->ldc}, alpha, p->a, ta, p->b, tb, beta, p->c, tc,
           what);
    return;
  }
  if (ta != tb || tb != tc)
    throw Error(std::string(what) + ": cuBLAS's grouped GEMM needs one element type for A, B and C");
  const size_t g = live.size();
  std::vector<cublasOperation_t> op_first(g), op_second(g);
  std::vector<int> m(g), n(g), k(g), ld_first(g), ld_second(g), ldc(g), group_size(g, 1);
  std::vector<float> alphas(g, alpha), betas(g, beta);
  std::vector<const void*> host_ptrs(3 * g);  // [first (B) | second (A) | C]
  for (size_t i = 0; i < g; ++i) {
    const GroupedProblem& p = *live[i];
    const CublasGemmArgs c = to_cublas({trans_a, trans_b, p.m, p.n, p.k, p.lda, p.ldb, p.ldc}, what);
    op_first[i] = c.op_first, op_second[i] = c.op_second;
    m[i] = c.m, n[i] = c.n, k[i] = c.k;
    ld_first[i] = c.ld_first, ld_second[i] = c.ld_second, ldc[i] = c.ldc;
    host_ptrs[i] = p.b, host_ptrs[g + i] = p.a, host_ptrs[2 * g + i] = p.c;
  }
  upload(ptrs, host_ptrs, stream);
  const void* const* first = ptrs.get();
  const void* const* second = ptrs.get() + g;
  void* const* cs = const_cast<void* const*>(ptrs.get() + 2 * g);
  cublas_check(cublasGemmGroupedBatchedEx(h, op_first.data(), op_second.data(), m.data(), n.data(), k.data(),
                                          alphas.data(), first, cuda_type(tb), ld_first.data(), second, cuda_type(ta),
                                          ld_second.data(), betas.data(), cs, cuda_type(tc), ldc.data(),
                                          static_cast<int>(g), group_size.data(), CUBLAS_COMPUTE_32F),
               std::string("cublasGemmGroupedBatchedEx (") + what + ")");
}

}  // namespace moepp::gpu
