// sgemm: the one entry point for fp32 matrix products (and gemm_bf16 for bf16 ones). Row-major:
//   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C,  op(X) = X or X^T.
// Backends: OpenBLAS (cblas_sgemm) and oneDNN (dnnl_sgemm). Threading contract: moepp owns the
// threads (OpenMP); the libraries run single-threaded inside our parallel regions, so sgemm may be
// called concurrently from several OpenMP threads on disjoint outputs. sgemm_parallel splits one
// product over all threads itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace moepp {

// kAuto (the default) picks OpenBLAS or oneDNN per call from the shape (see gemm.cpp for the measured
// rule). The environment variable MOEPP_GEMM_BACKEND (openblas | onednn | auto) sets the initial value.
enum class GemmBackend { kOpenBLAS, kOneDNN, kAuto };

void set_gemm_backend(GemmBackend b);
// Which kAuto rule this CPU gets: "avx512: onednn" where oneDNN runs AVX-512 kernels, else
// "avx2: by shape" (see gemm.cpp).
const char* gemm_auto_rule();
GemmBackend gemm_backend();
const char* gemm_backend_name(GemmBackend b);
GemmBackend parse_gemm_backend(const std::string& name);  // "openblas" | "onednn" | "auto"; throws Error

// Single-threaded product (call it from inside a parallel region, or for small work).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same product split over all OpenMP threads (by rows of C, or columns when M is small).
void sgemm_parallel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                    int64_t ldc);

// bf16 products: C[M, N] (+= when accumulate) = A[M, K] · B[N, K]^T, with A and B bfloat16 (bit
// patterns), fp32 accumulation and output; C rows ldc apart. oneDNN's bf16 matmul, one primitive per
// (N, K, ldc, accumulate) made on first use and kept (the row count M is given at run time), over all
// OpenMP threads: call it from serial code. Thread-safe (each call has its own scratch memory).
// gemm_bf16_native() says whether oneDNN runs native AVX-512 BF16 kernels here (about 2x sgemm's
// FLOP/s on this project's AVX-512 machine); elsewhere it emulates them, and callers keep fp32. The
// environment variable MOEPP_BF16_GEMM=0 makes it false (callers then keep their exact fp32 path; any
// value but 0 or 1 throws moepp::Error naming it). Read once, at the first call.
bool gemm_bf16_native();
void gemm_bf16_parallel(int64_t M, int64_t N, int64_t K, const uint16_t* A, const uint16_t* B, float* C,
                        int64_t ldc, bool accumulate);

// A bf16 weight matrix B [N, K] (gemm_bf16_parallel's B) copied once into the blocked layout oneDNN's
// matmul prefers, so that products of many rows stop re-packing B on every call. Each row count M gets
// its own primitive (made on first use, kept and shared by every matrix of the same shape; M above
// kMaxRows runs in chunks of it), which is what lets oneDNN take its brgemm kernels (AMX where the CPU
// has them); with the plain layout and a run-time M it takes its jit gemm, which packs B each call.
// Measured on the AMX Xeon (`moepp bench gemm --bf16-packed`, bench/results/gemm_bf16_packed_xeon.jsonl):
// 1.1-2.0x over 9-512 rows at the benchmark model's expert shapes.
// Ownership: the copy (N * K * 2 bytes, padded to the layout's blocks) is held by the object; B is not
// kept. Immutable after pack(): multiply() may be called from several threads' serial code, not from
// inside a parallel region.
class Bf16PackedWeights {
 public:
  static constexpr int64_t kMaxRows = 512;
  // Null where gemm_bf16_native() is false or oneDNN offers no packed layout for this shape (callers
  // then keep gemm_bf16_parallel). Throws moepp::Error on a bad shape.
  static std::shared_ptr<const Bf16PackedWeights> pack(const uint16_t* B, int64_t N, int64_t K);
  ~Bf16PackedWeights();
  // C [M, N] (+= when accumulate) = A [M, K] . B^T, with C's rows ldc apart; as gemm_bf16_parallel.
  void multiply(float* C, const uint16_t* A, int64_t M, int64_t ldc, bool accumulate) const;
  int64_t rows() const { return N_; }
  int64_t cols() const { return K_; }
  size_t bytes() const;  // the packed copy

 private:
  struct Impl;
  Bf16PackedWeights(int64_t N, int64_t K, std::unique_ptr<Impl> impl);
  int64_t N_, K_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moepp
