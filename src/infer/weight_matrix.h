// WeightMatrix: a read-only [O, I] weight matrix (nn.Linear layout) stored as F32, BF16, INT8 with
// one fp32 scale per output row (symmetric, scale = max|w_row| / 127), or Q4 (4-bit blocks of 32 with
// an fp16 scale each, core/q4_blocks.h).
// Products with few input rows (decoding) stream the stored weights through SIMD dot-product kernels:
// F32/BF16/INT8 compute in fp32; Q4 quantises the input rows to 8 bits per block and takes integer
// block dot products. With many rows (prefill, evaluation): F32 runs sgemm; BF16, INT8 and Q4, where
// the CPU has AVX-512 BF16, run a bf16 GEMM with the input rows rounded to bf16 (fp32 accumulation, as
// llama.cpp and PyTorch's bf16 matmul do; INT8's codes are exact in bf16 and its row scales applied to
// the products; docs/inference.md has the measured cost in perplexity); otherwise each thread
// dequantises a block of weight rows to fp32 and runs sgemm on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moepp {

class Fnv1a64;
class Bf16PackedWeights;

enum class WeightDType { kF32, kBF16, kInt8, kQ4 };

const char* weight_dtype_name(WeightDType d);          // "f32", "bf16", "int8", "q4"
WeightDType parse_weight_dtype(const std::string& s);  // inverse; throws moepp::Error naming the value

class WeightMatrix {
 public:
  WeightMatrix() = default;
  // Converts w [O, I] (row-major fp32) to dtype d (BF16: round to nearest even; INT8: per-row scale;
  // Q4: per 32-block fp16 scale, any I, the last block padded).
  static WeightMatrix from_f32(const float* w, int64_t O, int64_t I, WeightDType d);
  // A matrix read in place from memory that `owner` keeps alive (e.g. tensors of a memory-mapped
  // safetensors file), in the layout stored() describes: BF16 data [O, I]; INT8 data [O, I] int8 and
  // scales [O] fp32; Q4 codes [O, q4_blocks(I), 16] and scales [O, q4_blocks(I)] fp16. Nothing is
  // copied. Throws moepp::Error for F32, null or misaligned data or scales (each aligned to its element).
  static WeightMatrix view(WeightDType d, const void* data, const void* scales, int64_t O, int64_t I,
                           std::shared_ptr<const void> owner);
  static WeightMatrix bf16_view(const void* data, int64_t O, int64_t I, std::shared_ptr<const void> owner) {
    return view(WeightDType::kBF16, data, nullptr, O, I, std::move(owner));
  }

  // The stored values, as view() reads them: data (F32 / BF16 / INT8 elements, or Q4 codes) and scales
  // (INT8 fp32 per row, Q4 fp16 per block; none for F32 and BF16). Valid while the matrix lives.
  struct Stored {
    const void* data;
    size_t data_bytes;
    const void* scales;
    size_t scale_bytes;
  };
  Stored stored() const;

  // The same matrix holding its own copy of the stored values (a view's no longer needs its owner).
  WeightMatrix owned_copy() const;

  int64_t rows() const { return O_; }
  int64_t cols() const { return I_; }
  WeightDType dtype() const { return dtype_; }
  size_t bytes() const;         // storage held, scales and a packed copy included (a view's: the packed copy)
  size_t mapped_bytes() const;  // bytes read in place from the owner's memory (views only)

  // out [M, O] = x [M, I] · W^T (added to out when accumulate). Uses all OpenMP threads; do not call
  // from inside a parallel region.
  void matmul(float* out, const float* x, int64_t M, bool accumulate = false) const;

  // BF16 only: keeps a second copy of the matrix in oneDNN's blocked layout (core/gemm.h's
  // Bf16PackedWeights) for products of many rows, which then stop re-packing the weights on every call;
  // products of few rows keep reading the stored layout. Doubles the matrix's memory. Returns the bytes
  // added: 0 for other dtypes, where the CPU lacks native bf16 products, or when already packed. Not
  // thread-safe against concurrent matmul() calls: pack before sharing the matrix.
  size_t pack_for_many_rows();
  size_t packed_bytes() const;  // the packed copy (0 without one)

  // Row r of W as fp32 (dequantised) into out [I].
  void row_f32(int64_t r, float* out) const;

  // Adds the dtype, the shape and the stored values (scales included) to h.
  void add_to_hash(Fnv1a64& h) const;

 private:
  WeightDType dtype_ = WeightDType::kF32;
  int64_t O_ = 0, I_ = 0;
  // Owned storage (from_f32), or for views none: the view pointers below say where the values are.
  std::vector<float> f32_;
  std::vector<uint16_t> bf16_;
  std::vector<int8_t> i8_;
  std::vector<float> scale_;         // [O] INT8 only
  std::vector<uint8_t> q4_codes_;    // [O, q4_blocks(I), 16] Q4 only
  std::vector<uint16_t> q4_scales_;  // [O, q4_blocks(I)] fp16, Q4 only
  const void* view_data_ = nullptr;    // set for views (then the vectors are empty)
  const void* view_scales_ = nullptr;
  std::shared_ptr<const void> owner_;  // keeps a view's memory alive
  std::shared_ptr<const Bf16PackedWeights> packed_;  // pack_for_many_rows(); shared by copies
  const uint16_t* bf16() const { return view_data_ ? static_cast<const uint16_t*>(view_data_) : bf16_.data(); }
  const int8_t* i8() const { return view_data_ ? static_cast<const int8_t*>(view_data_) : i8_.data(); }
  const float* row_scales() const { return view_data_ ? static_cast<const float*>(view_scales_) : scale_.data(); }
  const uint8_t* q4_codes() const { return view_data_ ? static_cast<const uint8_t*>(view_data_) : q4_codes_.data(); }
  void matmul_bf16(float* out, const float* x, int64_t M, bool accumulate) const;  // BF16/INT8/Q4, many rows
  const uint16_t* q4_scales() const {
    return view_data_ ? static_cast<const uint16_t*>(view_scales_) : q4_scales_.data();
  }
};

}  // namespace moepp
