// The functions module.cpp exposes to Python, defined in qgemm.cpp.
#pragma once

#include <torch/extension.h>

namespace lucid {

torch::Tensor q4_gemm(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& d, const torch::Tensor& m,
                      const c10::optional<torch::Tensor>& bias, int64_t N);
torch::Tensor q8_gemm(const torch::Tensor& x, const torch::Tensor& qs, const torch::Tensor& d,
                      const c10::optional<torch::Tensor>& bias, int64_t N);
torch::Tensor q4_dequantize(const torch::Tensor& qs, const torch::Tensor& d, const torch::Tensor& m, int64_t N,
                            int64_t K);
torch::Tensor q8_dequantize(const torch::Tensor& qs, const torch::Tensor& d, int64_t N, int64_t K);

// Throws unless qs and d are packed weights for an (N, K) matrix with `bytes_per_block` bytes per row group block.
void check_packed(const torch::Tensor& qs, const torch::Tensor& d, int64_t N, int64_t K, int64_t bytes_per_block);

}  // namespace lucid
