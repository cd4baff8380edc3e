// Tests of src/gpu/gpu_gemm: the row-major to cuBLAS mapping (host: checked by a column-major GEMM with
// cuBLAS's semantics written here), its size checks, the expert problem list, and on a GPU the single
// and grouped products against a host product.
#include "gpu/gpu_gemm.h"

#include <gtest/gtest.h>

#include <climits>

#include "core/error.h"
#include "gpu/gpu_context.h"
#include "gpu_test_util.h"

namespace moepp::gpu {
namespace {

// Row-major C [m, n] = op(A) · op(B) (the contract of GemmShape), naively.
std::vector<float> row_major_product(const GemmShape& s, const std::vector<float>& A, const std::vector<float>& B) {
  std::vector<float> C(s.m * s.ldc, 0.0f);
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      double acc = 0.0;
      for (int64_t l = 0; l < s.k; ++l) {
        const float a = s.trans_a ? A[l * s.lda + i] : A[i * s.lda + l];
        const float b = s.trans_b ? B[j * s.ldb + l] : B[l * s.ldb + j];
        acc += static_cast<double>(a) * b;
      }
      C[i * s.ldc + j] = static_cast<float>(acc);
    }
  return C;
}

// What cuBLAS computes for a call: column-major C [m, n] = op(X) [m, k] · op(Y) [k, n], X the first
// operand (ld_first), Y the second.
std::vector<float> column_major_call(const CublasGemmArgs& c, const std::vector<float>& X, const std::vector<float>& Y,
                                     size_t c_size) {
  std::vector<float> C(c_size, 0.0f);
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j) {
      double acc = 0.0;
      for (int l = 0; l < c.k; ++l) {
        const float x = c.op_first == CUBLAS_OP_N ? X[i + static_cast<size_t>(l) * c.ld_first]
                                                  : X[l + static_cast<size_t>(i) * c.ld_first];
        const float y = c.op_second == CUBLAS_OP_N ? Y[l + static_cast<size_t>(j) * c.ld_second]
                                                   : Y[j + static_cast<size_t>(l) * c.ld_second];
        acc += static_cast<double>(x) * y;
      }
      C[i + static_cast<size_t>(j) * c.ldc] = static_cast<float>(acc);
    }
  return C;
}

GemmShape shape(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t pad) {
  return {ta, tb, m, n, k, (ta ? m : k) + pad, (tb ? k : n) + pad, n + pad};
}

TEST(ToCublas, ComputesTheRowMajorProductForEveryTranspose) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t pad : {0, 3}) {
        const GemmShape s = shape(ta, tb, 5, 7, 4, pad);
        const std::vector<float> A = test::randn((ta ? s.k : s.m) * s.lda, 1), B = test::randn((tb ? s.n : s.k) * s.ldb, 2);
        const CublasGemmArgs c = to_cublas(s, "test");
        EXPECT_EQ(c.m, s.n);
        EXPECT_EQ(c.n, s.m);
        const std::vector<float> want = row_major_product(s, A, B);
        const std::vector<float> got = column_major_call(c, B, A, want.size());
        for (int64_t i = 0; i < s.m; ++i)
          for (int64_t j = 0; j < s.n; ++j)
            EXPECT_FLOAT_EQ(got[i * s.ldc + j], want[i * s.ldc + j]) << "ta " << ta << " tb " << tb << " pad " << pad;
      }
}

TEST(ToCublas, RejectsLeadingDimensionsBelowTheMatrixWidth) {
  GemmShape s = shape(false, true, 4, 6, 8, 0);
  s.lda = 7;  // A [4, 8] needs 8
  try {
    to_cublas(s, "router x·Wg^T");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("router x·Wg^T: GEMM leading dimensions"), std::string::npos) << e.what();
  }
  s = shape(true, false, 4, 6, 8, 0);
  s.ldb = 5;  // B [8, 6] needs 6
  EXPECT_THROW(to_cublas(s, "t"), Error);
}

TEST(ToCublas, RejectsSizesBeyondCublasInts) {
  GemmShape s = shape(false, false, int64_t{INT_MAX} + 1, 4, 4, 0);
  try {
    to_cublas(s, "experts");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m = 2147483648"), std::string::npos) << e.what();
  }
  EXPECT_THROW(to_cublas(shape(false, false, 4, -1, 4, 0), "t"), Error);
}

TEST(ExpertProblems, SkipsExpertsWithoutRowsAndPassesTheirFirstRow) {
  const int64_t offset[] = {0, 3, 3, 3, 10, 10};
  std::vector<int64_t> seen;
  const auto p = expert_problems(offset, 5, [&](int64_t e, int64_t r0, int64_t m) {
    seen.push_back(e);
    return GroupedProblem{m, 2, 3, nullptr, nullptr, nullptr, r0, 0, 0};
  });
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(p[0].m, 3);
  EXPECT_EQ(p[0].lda, 0);  // r0 of expert 0
  EXPECT_EQ(p[1].m, 7);
  EXPECT_EQ(p[1].lda, 3);  // r0 of expert 3
}

TEST(GroupedGemmMode, ParsesBothNamesAndRejectsOthers) {
  EXPECT_EQ(parse_grouped_gemm_mode("per-expert", "--gemm"), GroupedGemmMode::kPerProduct);
  EXPECT_EQ(parse_grouped_gemm_mode("grouped", "--gemm"), GroupedGemmMode::kGroupedBatched);
  EXPECT_STREQ(grouped_gemm_mode_name(GroupedGemmMode::kGroupedBatched), "grouped");
  try {
    parse_grouped_gemm_mode("batched", "--gemm");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--gemm: unknown expert GEMM mode 'batched'"), std::string::npos);
  }
}

// ---- on the GPU ----

TEST(GpuGemm, MatchesTheHostProductInFp32) {
  MOEPP_REQUIRE_GPU();
  GpuContext ctx;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const GemmShape s = shape(ta, tb, 37, 29, 53, 2);
      const std::vector<float> A = test::randn((ta ? s.k : s.m) * s.lda, 3), B = test::randn((tb ? s.n : s.k) * s.ldb, 4);
      const std::vector<float> C0 = test::randn(s.m * s.ldc, 5);
      DeviceBuffer<float> dA, dB, dC;
      upload(dA, A, ctx.s());
      upload(dB, B, ctx.s());
      upload(dC, C0, ctx.s());
      gemm(ctx.blas.get(), s, 1.0f, dA.get(), ElemType::kF32, dB.get(), ElemType::kF32, 1.0f, dC.get(), ElemType::kF32,
           "test");
      std::vector<float> got = download(dC.get(), dC.size(), ctx.s());
      std::vector<float> want = row_major_product(s, A, B);
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t j = 0; j < s.n; ++j) want[i * s.ldc + j] += C0[i * s.ldc + j];
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t j = s.n; j < s.ldc; ++j) want[i * s.ldc + j] = C0[i * s.ldc + j];  // padding untouched
      EXPECT_LT(test::rel_error(got, want), 1e-5) << "ta " << ta << " tb " << tb;
    }
}

TEST(GpuGemm, GroupedAndPerProductModesAgreeWithTheHost) {
  MOEPP_REQUIRE_GPU();
  GpuContext ctx;
  const int64_t n = 24, k = 40;
  const int64_t offset[] = {0, 5, 5, 17, 18};  // expert 1 has no rows
  const int64_t rows = offset[4];
  const std::vector<float> X = test::randn(rows * k, 6), Wt = test::randn(4 * n * k, 7);
  DeviceBuffer<float> dX, dW, dC1, dC2;
  upload(dX, X, ctx.s());
  upload(dW, Wt, ctx.s());
  dC1.ensure(rows * n);
  dC2.ensure(rows * n);
  DeviceBuffer<const void*> ptrs;
  for (auto [mode, dC] : {std::pair{GroupedGemmMode::kPerProduct, &dC1}, std::pair{GroupedGemmMode::kGroupedBatched, &dC2}}) {
    float* c = dC->get();
    const auto problems = expert_problems(offset, 4, [&](int64_t e, int64_t r0, int64_t m) {
      return GroupedProblem{m, n, k, dX.get() + r0 * k, dW.get() + e * n * k, c + r0 * n, k, k, n};
    });
    grouped_gemm(mode, ctx.blas.get(), ctx.s(), ptrs, false, true, 1.0f, 0.0f, problems, ElemType::kF32,
                 ElemType::kF32, ElemType::kF32, "test");
  }
  const std::vector<float> c1 = download(dC1.get(), dC1.size(), ctx.s()), c2 = download(dC2.get(), dC2.size(), ctx.s());
  std::vector<float> want(rows * n);
  for (int64_t e = 0; e < 4; ++e)
    for (int64_t r = offset[e]; r < offset[e + 1]; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0.0;
        for (int64_t l = 0; l < k; ++l) acc += static_cast<double>(X[r * k + l]) * Wt[e * n * k + j * k + l];
        want[r * n + j] = static_cast<float>(acc);
      }
  EXPECT_LT(test::rel_error(c1, want), 1e-5);
  EXPECT_LT(test::rel_error(c2, want), 1e-5);
}

TEST(GpuGemm, GroupedModeRefusesMixedTypes) {
  MOEPP_REQUIRE_GPU();
  GpuContext ctx;
  DeviceBuffer<float> buf(16);
  DeviceBuffer<const void*> ptrs;
  const std::vector<GroupedProblem> p = {{2, 2, 2, buf.get(), buf.get(), buf.get(), 2, 2, 2}};
  EXPECT_THROW(grouped_gemm(GroupedGemmMode::kGroupedBatched, ctx.blas.get(), ctx.s(), ptrs, false, false, 1.0f, 0.0f,
                            p, ElemType::kBF16, ElemType::kBF16, ElemType::kF32, "test"),
               Error);
}

}  // namespace
}  // namespace moepp::gpu
