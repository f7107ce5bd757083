// The whole decoder stack of a Qwen2 model for one engine step, in one call from Python.
//
// A decode step pushes one token per sequence through 24 layers. In eager PyTorch that is ~40 small ops per
// layer (norms, rotary, cache writes, gathers, SDPA, activation), each costing microseconds of dispatch for
// nanoseconds of math: about a quarter of the step. Here each layer is plain loops over float32 rows plus the
// quantized matmuls of qgemm.h, and attention reads K/V straight from the paged pool through the block tables.
// Every token is a row that attends over its own sequence's block table up to its position, so prompt chunks
// work too (causal by construction): a decode token attends on its own, consecutive rows of one prompt chunk
// together (flash-attention style, one pass over the keys). The runner sends prompt chunks here while their
// attention work stays below a measured crossover with PyTorch's flash attention.
// The eager model (lucid/models/qwen2.py) stays the reference: tests check this path against it.
// Options the layer may take beyond Qwen2's (each off by default, so Qwen2's step does no extra work): a per-head
// RMSNorm on queries and keys before rotation, an RMSNorm on the attention's and the MLP's outputs before they join
// the residual (Gemma 3's "sandwich"), a rotary base and a score scale per layer, a sliding window per layer (a
// query sees only the latest `window` positions, itself included), and GELU-tanh in place of SiLU.
#pragma once

#include <torch/extension.h>

#include <string>
#include <tuple>
#include <vector>

#include "qgemm.h"

namespace lucid {

// A packed matrix as Python passes it: (format "q4" or "q8", qs, d, m or None, float32 bias or None, N).
using LinearSpec = std::tuple<std::string, torch::Tensor, torch::Tensor, c10::optional<torch::Tensor>,
                              c10::optional<torch::Tensor>, int64_t>;

struct PackedLinear {
  Format format = Format::Q8;
  torch::Tensor qs, d, m, bias;  // m: Q4 only; bias: float32 or undefined
  int64_t n = 0, k = 0;

  explicit PackedLinear(const LinearSpec& spec);
  PackedLinear() = default;
  void apply(const float* x, int64_t rows, float* y) const;  // y (rows, n) = x (rows, k) @ W^T + bias
};

struct FusedLayer {
  torch::Tensor input_norm, post_norm;  // float32 (hidden,): before attention, before the MLP
  PackedLinear qkv, o, gate_up, down;   // q|k|v and gate|up concatenated along the output rows
  torch::Tensor k_cache, v_cache;       // (slots, kv_heads, head_dim) float32 or bfloat16, the engine's pool
  torch::Tensor q_norm, k_norm;         // float32 (head_dim,) or undefined: per-head norms before rotation
  torch::Tensor attn_out_norm, mlp_out_norm;  // float32 (hidden,) or undefined: norms of each block's output
  int64_t rope = 0;                     // index of this layer's rotary frequencies in FusedDecoder::inv_freqs_
  float scale = 0;                      // attention score scale
  int64_t window = 0;                   // sliding window in positions, 0: attends to the whole context
};

// What add_layer takes beyond the weights (Python passes None / 0 for "as Qwen2").
struct LayerOptions {
  c10::optional<torch::Tensor> q_norm, k_norm, attn_out_norm, mlp_out_norm;
  double rope_theta = 0;   // 0: the decoder's
  double scale = 0;        // 0: 1 / sqrt(head_dim)
  int64_t window = 0;
};

class FusedDecoder {
 public:
  // activation: "silu" (SwiGLU) or "gelu_tanh" (Gemma's GeGLU).
  FusedDecoder(int64_t hidden, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, int64_t intermediate,
               double rms_eps, double rope_theta, const torch::Tensor& final_norm,
               const std::string& activation = "silu");

  void add_layer(const torch::Tensor& input_norm, const torch::Tensor& post_norm, const LinearSpec& qkv,
                 const LinearSpec& o, const LinearSpec& gate_up, const LinearSpec& down,
                 const torch::Tensor& k_cache, const torch::Tensor& v_cache, const LayerOptions& options = {});

  // One call at a time per decoder (its scratch buffers are shared across calls).
  // hidden (M, hidden) embeddings of the step's tokens; positions, slot_mapping int64 (M,);
  // block_tables int32 (M, max_blocks), each row its sequence's table; context_lens int32 (M,) = position + 1. Writes the new K/V into
  // the pool and returns the final-normed hidden states, float32 (M, hidden).
  // attend_alone, bool (M,) or None: which rows attend on their own (a generated token: a decode or speculative
  // verify row), even beside rows of their sequence. When given, every other row is a prompt row and takes the
  // chunk arithmetic even in a chunk of one. Every per-row result (matmuls, norms, either attention) is
  // independent of the other rows, so a row's output depends only on its sequence's K/V and on its kind, never on
  // how the step was composed (chunk boundaries, the prefix cache, speculation). None: a single row attends on its
  // own, consecutive rows of a sequence together.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& positions,
                        const torch::Tensor& slot_mapping, const torch::Tensor& block_tables,
                        const torch::Tensor& context_lens, int64_t block_size,
                        const c10::optional<torch::Tensor>& attend_alone = c10::nullopt) const;

  // The same step, also tapping row `row` for the glass box (lucid/glassbox): returns (the step's output,
  // that row's residual stream after the embedding and after each layer (layers + 1, hidden), its rotated queries
  // in each layer (layers, heads * head_dim)), all float32. The step's arithmetic is forward's, bit for bit.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_tapped(
      const torch::Tensor& hidden, const torch::Tensor& positions, const torch::Tensor& slot_mapping,
      const torch::Tensor& block_tables, const torch::Tensor& context_lens, int64_t block_size,
      const c10::optional<torch::Tensor>& attend_alone, int64_t row) const;

  // The step's last norm on rows of residuals (rows, hidden) float32: what forward applies to its last layer's.
  torch::Tensor final_norm(const torch::Tensor& residuals) const;

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

 private:
  int64_t hidden_, num_heads_, num_kv_heads_, head_dim_, intermediate_;
  float rms_eps_;
  double rope_theta_;
  bool gelu_;  // GELU-tanh instead of SiLU in the MLP
  std::vector<std::vector<double>> inv_freqs_;  // per rotary base: frequency of each (x[i], x[i + head_dim/2]) pair
  torch::Tensor final_norm_;
  std::vector<FusedLayer> layers_;
  struct Scratch {
    std::vector<float> normed, qkv, attn, proj, gate_up, act;
  };
  mutable Scratch scratch_;  // per-step activations, kept so their pages are not faulted in again each step
  struct Tap {               // where forward_tapped copies its row's residuals and queries
    int64_t row;
    float* residuals;        // (layers + 1, hidden)
    float* queries;          // (layers, heads * head_dim)
  };
  torch::Tensor run(const torch::Tensor& hidden, const torch::Tensor& positions, const torch::Tensor& slot_mapping,
                    const torch::Tensor& block_tables, const torch::Tensor& context_lens, int64_t block_size,
                    const c10::optional<torch::Tensor>& attend_alone, const Tap* tap) const;
};

}  // namespace lucid
