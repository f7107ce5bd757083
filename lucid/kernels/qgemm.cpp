// The torch-facing ops over the kernels of qgemm.h: quantized matmul (any leading shape, float32 or bfloat16)
// and dequantization back to bfloat16.

#include "ops.h"
#include "qgemm.h"

namespace lucid {

// Checks of the packed tensors. Scales are stored as int16 holding float16 bits, so that a model-wide
// `.to(dtype)` (which converts floating-point buffers) leaves them alone.
void check_packed(const torch::Tensor& qs, const torch::Tensor& d, int64_t N, int64_t K, int64_t bytes_per_block) {
  TORCH_CHECK(K % QK == 0, "K must be a multiple of 32, got ", K);
  const int64_t G = (N + NR - 1) / NR;
  TORCH_CHECK(qs.scalar_type() == at::kByte && qs.is_contiguous() && qs.numel() == G * (K / QK) * bytes_per_block,
              "packed weights do not match K=", K, " and N=", N);
  TORCH_CHECK(d.scalar_type() == at::kShort && d.is_contiguous() && d.numel() == G * (K / QK) * NR,
              "scales must be contiguous int16 (float16 bits) of shape (G, K/32, 16)");
}

// x: (..., K) of any float dtype (float32 and bfloat16 natively) -> (..., N) in x's dtype.
template <Format F>
torch::Tensor gemm(const torch::Tensor& x_in, const torch::Tensor& qs, const torch::Tensor& d, const at::Half* wm,
                   const c10::optional<torch::Tensor>& bias_in, int64_t N) {
  TORCH_CHECK(x_in.dim() >= 1, "x must have at least one dimension");
  const auto dtype = x_in.scalar_type();
  const bool native = dtype == at::kFloat || dtype == at::kBFloat16;
  const torch::Tensor x = native ? x_in.contiguous() : x_in.to(at::kFloat).contiguous();
  const int64_t K = x.size(-1);
  const int64_t M = K ? x.numel() / K : 0;
  check_packed(qs, d, N, K, F == Format::Q4 ? 256 : 512);
  c10::optional<torch::Tensor> bias;
  if (bias_in && bias_in->defined()) {
    TORCH_CHECK(bias_in->numel() == N, "bias must have N elements");
    bias = bias_in->to(at::kFloat).contiguous();  // no-op for the float32 bias the layers keep
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  torch::Tensor y = torch::empty(shape, x.options());
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  if (M > 0) {
    if (x.scalar_type() == at::kFloat) {
      gemm_impl<F>(x.data_ptr<float>(), M, K, qs.data_ptr<uint8_t>(), half_ptr(d), wm, bp, y.data_ptr<float>(), N);
    } else {
      gemm_impl<F>(x.data_ptr<at::BFloat16>(), M, K, qs.data_ptr<uint8_t>(), half_ptr(d), wm, bp,
                   y.data_ptr<at::BFloat16>(), N);
    }
  }
  return native ? y : y.to(dtype);
}

torch::Tensor q4_gemm(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& d, const torch::Tensor& m,
                      const c10::optional<torch::Tensor>& bias, int64_t N) {
  TORCH_CHECK(m.scalar_type() == at::kShort && m.is_contiguous() && m.numel() == d.numel(),
              "mins must be contiguous int16 (float16 bits) shaped like the scales");
  return gemm<Format::Q4>(x, qs, d, half_ptr(m), bias, N);
}

torch::Tensor q8_gemm(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& d,
                      const c10::optional<torch::Tensor>& bias, int64_t N) {
  return gemm<Format::Q8>(x, qs, d, nullptr, bias, N);
}

// ---- dequantization to bf16, for the prefill path (large M), where bf16 GEMM beats integer dot products --

template <Format F>
torch::Tensor dequantize(const torch::Tensor& qs, const torch::Tensor& d, const at::Half* wm, int64_t N, int64_t K) {
  const int64_t B = K / QK;
  const int64_t G = (N + NR - 1) / NR;
  torch::Tensor w = torch::empty({N, K}, torch::dtype(at::kBFloat16));
  at::BFloat16* out = w.data_ptr<at::BFloat16>();
  const uint8_t* q = qs.data_ptr<uint8_t>();
  const at::Half* dp = half_ptr(d);
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    float vals[QK];
    for (int64_t g = g0; g < g1; ++g) {
      for (int r = 0; r < NR && g * NR + r < N; ++r) {
        at::BFloat16* row = out + (g * NR + r) * K;
        for (int64_t b = 0; b < B; ++b) {
          const int64_t sb = (g * B + b) * NR + r;
          const float scale = static_cast<float>(dp[sb]);
          if constexpr (F == Format::Q4) {
            const uint8_t* p = q + (g * B + b) * 256 + r * 4;
            const float mn = static_cast<float>(wm[sb]);
            for (int i = 0; i < 4; ++i) {
              for (int t = 0; t < 4; ++t) {
                const uint8_t byte = p[i * 64 + t];
                vals[4 * i + t] = scale * static_cast<float>(byte & 0x0F) + mn;
                vals[16 + 4 * i + t] = scale * static_cast<float>(byte >> 4) + mn;
              }
            }
          } else {
            const uint8_t* p = q + (g * B + b) * 512 + r * 4;
            for (int j = 0; j < 8; ++j) {
              for (int t = 0; t < 4; ++t) vals[4 * j + t] = scale * static_cast<float>(int(p[j * 64 + t]) - 128);
            }
          }
          for (int k = 0; k < QK; ++k) row[b * QK + k] = static_cast<at::BFloat16>(vals[k]);
        }
      }
    }
  });
  return w;
}

torch::Tensor q4_dequantize(const torch::Tensor& qs, const torch::Tensor& d, const torch::Tensor& m, int64_t N,
                            int64_t K) {
  check_packed(qs, d, N, K, 256);
  TORCH_CHECK(m.scalar_type() == at::kShort && m.is_contiguous() && m.numel() == d.numel(), "mins do not match");
  return dequantize<Format::Q4>(qs, d, half_ptr(m), N, K);
}

torch::Tensor q8_dequantize(const torch::Tensor& qs, const torch::Tensor& d, int64_t N, int64_t K) {
  check_packed(qs, d, N, K, 512);
  return dequantize<Format::Q8>(qs, d, nullptr, N, K);
}

}  // namespace lucid
