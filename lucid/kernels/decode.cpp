// The fused decode step (see decode.h). Float32 activations throughout; the K/V pool keeps the model's dtype.

#include "decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "ops.h"

namespace lucid {

namespace {

// e^x for 16 floats: 2^n * e^r with n = round(x / ln 2) and |r| <= ln 2 / 2, e^r by its Taylor series to degree 6
// (relative error ~2e-7, below float32's own rounding of the inputs we see).
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.4426950408889634f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.6931471805599453f), x);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << remaining) - 1);
}

// out = x / rms(x) * weight, for each of `rows` rows of `width` (rows split over threads when there are many).
// Each row's sum of squares is one chain of double additions in order (its rounding never depends on the batch);
// ROWS_AT_ONCE rows walk their chains side by side, so the additions' latency overlaps instead of adding up (8 rows
// of 896: 1.6 instead of 6.3 us, bitwise the same).
void rms_norm(const float* x, const float* weight, int64_t rows, int64_t width, float eps, float* out) {
  constexpr int64_t ROWS_AT_ONCE = 8;
  at::parallel_for(0, rows, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r += ROWS_AT_ONCE) {
      const int64_t n = std::min<int64_t>(ROWS_AT_ONCE, r1 - r);
      const float* xs = x + r * width;
      double sum_sq[ROWS_AT_ONCE] = {};
      if (n == ROWS_AT_ONCE) {  // a constant trip count: the compiler keeps the chains in registers, side by side
        for (int64_t i = 0; i < width; ++i) {
          for (int64_t j = 0; j < ROWS_AT_ONCE; ++j) {
            sum_sq[j] += static_cast<double>(xs[j * width + i]) * xs[j * width + i];
          }
        }
      } else {  // fewer rows (decode of a few streams): one chain at a time, in a register
        for (int64_t j = 0; j < n; ++j) {
          double sum = 0;
          for (int64_t i = 0; i < width; ++i) sum += static_cast<double>(xs[j * width + i]) * xs[j * width + i];
          sum_sq[j] = sum;
        }
      }
      for (int64_t j = 0; j < n; ++j) {
        const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq[j] / width + eps));
        for (int64_t i = 0; i < width; ++i) out[(r + j) * width + i] = xs[j * width + i] * inv * weight[i];
      }
    }
  });
}

// gate_up rows hold [gate (width) | up (width)]; act = silu(gate) * up = gate * up / (1 + e^-gate), or with `gelu`
// gelu_tanh(gate) * up, where gelu_tanh(x) = x (1 + tanh(u)) / 2 = x / (1 + e^-2u), u = sqrt(2/pi) (x + 0.044715 x^3).
void gated_act_mul(const float* gate_up, int64_t rows, int64_t width, bool gelu, float* act) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 c1 = _mm512_set1_ps(-2.0f * 0.7978845608028654f), c3 = _mm512_set1_ps(0.044715f);
  at::parallel_for(0, rows, 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = gate_up + r * 2 * width;
      const float* u = g + width;
      for (int64_t i = 0; i < width; i += 16) {
        const __mmask16 mask = tail_mask(width - i);
        const __m512 gv = _mm512_maskz_loadu_ps(mask, g + i);
        // the exponent: -x for SiLU, -2u for GELU-tanh
        const __m512 neg = gelu ? _mm512_mul_ps(c1, _mm512_fmadd_ps(_mm512_mul_ps(c3, gv), _mm512_mul_ps(gv, gv), gv))
                                : _mm512_sub_ps(_mm512_setzero_ps(), gv);
        const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(neg)));
        _mm512_mask_storeu_ps(act + r * width + i, mask,
                              _mm512_mul_ps(_mm512_mul_ps(gv, sig), _mm512_maskz_loadu_ps(mask, u + i)));
      }
    }
  });
}

// Rotary embedding, "rotate half": (x[i], x[i + half]) turns by the angle of pair i, in place for `heads` heads.
void rotate(float* x, int64_t heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

// x / rms(x) * weight over each of `heads` vectors of head_dim, in place (Qwen3's and Gemma's q/k norms).
void head_norm(float* x, int64_t heads, int64_t head_dim, const float* weight, float eps) {
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * head_dim;
    double sum_sq = 0;
    for (int64_t i = 0; i < head_dim; ++i) sum_sq += static_cast<double>(v[i]) * v[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum_sq / head_dim + eps));
    for (int64_t i = 0; i < head_dim; ++i) v[i] = v[i] * inv * weight[i];
  }
}

// Offset (in elements) of KV head `g`'s vector at position `offset` of pool block `block`, in a layer's pool
// (slots, kv_heads, head_dim). Position p of a sequence is (table[p / block_size], p % block_size).
inline int64_t pool_row(int32_t block, int64_t offset, int64_t block_size, int64_t kv_heads, int64_t g,
                        int64_t head_dim) {
  return ((static_cast<int64_t>(block) * block_size + offset) * kv_heads + g) * head_dim;
}

// One sequence's query heads that share KV head `g` (at most 16 of them), attending over its cached positions
// first..len-1 (first > 0 on a sliding-window layer). q: (group, head_dim) float32, already rotated; out: (group, head_dim).
// Scores are kept as one 16-lane vector per position, lane h for head h, so the softmax runs across positions
// with one vector op per position and every buffer is walked in order.
template <typename T, int D>
void attend_group(const float* q, int64_t group, const T* k_cache, const T* v_cache, int64_t kv_heads, int64_t g,
                  const int32_t* table, int64_t block_size, int64_t first, int64_t end, float scale, float* out) {
  constexpr int C = D / 16;  // 16-float chunks of a head: a query, key, value or output row fits in C registers
  constexpr int64_t head_dim = D;
  const int64_t len = end - first;  // keys seen; p below counts from `first`
  const __mmask16 heads = tail_mask(group);
  thread_local std::vector<float> scores;  // (len, 16 lanes); reused by each thread across calls
  thread_local std::vector<int64_t> rows;  // offset of position first + p's (slot, g) vector in the pool
  scores.resize(len * 16);
  rows.resize(len);
  // block by block: no division per position on this hot path
  for (int64_t b = first / block_size, j = first % block_size, p = 0; p < len; ++b, j = 0) {
    for (; j < block_size && p < len; ++j, ++p) rows[p] = pool_row(table[b], j, block_size, kv_heads, g, D);
  }
  // The weights streamed since the last step have evicted the pool from cache: fetch rows ahead of use.
  const int64_t row_bytes = head_dim * static_cast<int64_t>(sizeof(T));
  auto prefetch_row = [&](const T* base, int64_t p) {
    if (p >= len) return;
    const char* row = reinterpret_cast<const char*>(base + rows[p]);
    for (int64_t off = 0; off < row_bytes; off += 64) _mm_prefetch(row + off, _MM_HINT_T0);
  };
  constexpr int64_t AHEAD = 32;  // positions
  for (int64_t p = 0; p < AHEAD; ++p) prefetch_row(k_cache, p);
  // Scores, position by position: each K row is loaded (and widened to float) once, into registers, for every head
  // of the group; the scaled queries come from L1. Per head and position the arithmetic is what it was head by head.
  alignas(64) float qs[16 * D];
  for (int64_t h = 0; h < group; ++h) {
    for (int c = 0; c < C; ++c) {
      _mm512_store_ps(qs + h * D + c * 16, _mm512_mul_ps(load16(q + h * D + c * 16), _mm512_set1_ps(scale)));
    }
  }
  for (int64_t p = 0; p < len; ++p) {
    prefetch_row(k_cache, p + AHEAD);
    const T* k = k_cache + rows[p];
    __m512 kv[C];
    for (int c = 0; c < C; ++c) kv[c] = load16(k + c * 16);
    for (int64_t h = 0; h < group; ++h) {
      const float* qh = qs + h * D;
      __m512 acc = _mm512_mul_ps(_mm512_load_ps(qh), kv[0]);
      for (int c = 1; c < C; ++c) acc = _mm512_fmadd_ps(_mm512_load_ps(qh + c * 16), kv[c], acc);
      scores[p * 16 + h] = _mm512_reduce_add_ps(acc);
    }
  }
  // Softmax across positions, all heads at once (lane h).
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (int64_t p = 0; p < len; ++p) top = _mm512_mask_max_ps(top, heads, top, _mm512_loadu_ps(&scores[p * 16]));
  __m512 total = _mm512_setzero_ps();
  for (int64_t p = 0; p < len; ++p) {
    prefetch_row(v_cache, p + AHEAD);
    const __m512 e = _mm512_maskz_mov_ps(heads, exp16(_mm512_sub_ps(_mm512_loadu_ps(&scores[p * 16]), top)));
    _mm512_storeu_ps(&scores[p * 16], e);
    total = _mm512_add_ps(total, e);
  }
  alignas(64) float inv[16];
  _mm512_store_ps(inv, _mm512_maskz_div_ps(heads, _mm512_set1_ps(1.0f), total));
  // Weighted values, HEADS heads at a time with their output rows in registers: each V row is loaded (and widened)
  // once per HEADS heads instead of once per head. Per head the sum runs over positions in order, as before.
  constexpr int64_t HEADS = D <= 64 ? 4 : (D <= 128 ? 2 : 1);  // HEADS * C accumulators + C values: <= 32 registers
  for (int64_t h0 = 0; h0 < group; h0 += HEADS) {
    const int64_t n = std::min<int64_t>(HEADS, group - h0);
    __m512 acc[HEADS][C];
    for (int64_t i = 0; i < HEADS; ++i) {
      for (int c = 0; c < C; ++c) acc[i][c] = _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < len; ++p) {
      const T* v = v_cache + rows[p];
      __m512 vv[C];
      for (int c = 0; c < C; ++c) vv[c] = load16(v + c * 16);
      for (int64_t i = 0; i < HEADS; ++i) {
        if (i < n) {
          const __m512 w = _mm512_set1_ps(scores[p * 16 + h0 + i]);
          for (int c = 0; c < C; ++c) acc[i][c] = _mm512_fmadd_ps(w, vv[c], acc[i][c]);
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t h = h0 + i;
      for (int c = 0; c < C; ++c) {
        _mm512_storeu_ps(out + h * D + c * 16, _mm512_mul_ps(acc[i][c], _mm512_set1_ps(inv[h])));
      }
    }
  }
}

// Rows of one sequence's prompt chunk (n rows at consecutive positions, one block table; row i sees first_len + i
// keys, or only the latest `window` of them when window > 0), the query heads that share KV head `g`. Flash-attention style: one pass over the keys in tiles of 16
// positions; each tile is converted to float once (K transposed, so a query's 16 scores are plain FMAs) and used by
// every query of the chunk, which keeps a running max, sum and output row (online softmax).
template <typename T, int D>
void attend_chunk(const float* q, int64_t q_stride, int64_t n, int64_t group, const T* k_cache, const T* v_cache,
                  int64_t kv_heads, int64_t g, const int32_t* table, int64_t block_size, int64_t first_len,
                  int64_t window, float scale, float* out, int64_t out_stride) {
  constexpr int C = D / 16;
  const int64_t queries = n * group, len = first_len + n - 1;
  thread_local std::vector<float> qs, acc, top, total;  // per query: scaled query, output row, running max and sum
  qs.resize(queries * D);
  acc.assign(queries * D, 0.0f);
  top.assign(queries, -INFINITY);
  total.assign(queries, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < group; ++h) {
      for (int64_t d = 0; d < D; ++d) qs[(i * group + h) * D + d] = q[i * q_stride + h * D + d] * scale;
    }
  }
  alignas(64) float kt[D * 16];  // the tile's keys, transposed: kt[d * 16 + j]
  alignas(64) float vt[16 * D];  // the tile's values: vt[j * D + d]
  alignas(64) float weight[16];
  // row i sees keys [lowest(i), first_len + i)
  auto lowest = [&](int64_t i) { return window > 0 ? std::max<int64_t>(0, first_len + i - window) : 0; };
  for (int64_t p0 = lowest(0) / 16 * 16; p0 < len; p0 += 16) {
    const int64_t width = std::min<int64_t>(16, len - p0);
    for (int64_t j = 0; j < 16; ++j) {
      if (j >= width) {  // past the last key: zeros, so masked lanes stay finite
        for (int64_t d = 0; d < D; ++d) kt[d * 16 + j] = 0.0f;
        std::fill(vt + j * D, vt + (j + 1) * D, 0.0f);
        continue;
      }
      const int64_t pos = p0 + j;
      const int64_t row = pool_row(table[pos / block_size], pos % block_size, block_size, kv_heads, g, D);
      for (int c = 0; c < C; ++c) {
        alignas(64) float chunk[16];
        _mm512_store_ps(chunk, load16(k_cache + row + c * 16));
        for (int t = 0; t < 16; ++t) kt[(c * 16 + t) * 16 + j] = chunk[t];
        _mm512_store_ps(vt + j * D + c * 16, load16(v_cache + row + c * 16));
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t visible = std::min<int64_t>(16, first_len + i - p0);  // keys of this tile row i may see
      const int64_t skipped = std::max<int64_t>(0, lowest(i) - p0);        // ... past the window's start
      if (visible <= 0 || skipped >= 16) continue;
      const __mmask16 mask = tail_mask(visible) & static_cast<__mmask16>(~tail_mask(skipped));
      for (int64_t h = 0; h < group; ++h) {
        const int64_t qi = i * group + h;
        const float* qv = &qs[qi * D];
        // Four partial sums: one chain of D dependent FMAs would wait on the FMA latency at every step.
        __m512 part[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int d = 0; d < D; d += 4) {
          for (int u = 0; u < 4; ++u) {
            part[u] = _mm512_fmadd_ps(_mm512_set1_ps(qv[d + u]), _mm512_load_ps(kt + (d + u) * 16), part[u]);
          }
        }
        __m512 s = _mm512_add_ps(_mm512_add_ps(part[0], part[1]), _mm512_add_ps(part[2], part[3]));
        s = _mm512_mask_blend_ps(mask, _mm512_set1_ps(-INFINITY), s);
        const float new_top = std::max(top[qi], _mm512_reduce_max_ps(s));
        const float rescale = std::exp(top[qi] - new_top);  // 0 for the first tile (top = -inf)
        const __m512 e = _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(s, _mm512_set1_ps(new_top))));
        top[qi] = new_top;
        total[qi] = total[qi] * rescale + _mm512_reduce_add_ps(e);
        _mm512_store_ps(weight, e);
        __m512 o[C];
        for (int c = 0; c < C; ++c) o[c] = _mm512_mul_ps(_mm512_loadu_ps(&acc[qi * D + c * 16]), _mm512_set1_ps(rescale));
        for (int64_t j = skipped; j < visible; ++j) {
          const __m512 w = _mm512_set1_ps(weight[j]);
          for (int c = 0; c < C; ++c) o[c] = _mm512_fmadd_ps(w, _mm512_load_ps(vt + j * D + c * 16), o[c]);
        }
        for (int c = 0; c < C; ++c) _mm512_storeu_ps(&acc[qi * D + c * 16], o[c]);
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < group; ++h) {
      const int64_t qi = i * group + h;
      for (int64_t d = 0; d < D; ++d) out[i * out_stride + h * D + d] = acc[qi * D + d] / total[qi];
    }
  }
}

inline void store_row(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
inline void store_row(at::BFloat16* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) store16(dst + i, load16(src + i), tail_mask(n - i));
}

constexpr int64_t CHUNK_ROWS = 16;  // prompt rows per attention task: enough to share each key tile, and to split

// Calls f with std::integral_constant<int, head_dim>: the head size is a template argument so a row fits in registers.
template <typename F>
void dispatch_head_dim(int64_t head_dim, F&& f) {
  switch (head_dim) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default: return f(std::integral_constant<int, 256>{});
  }
}

template <typename T>
void write_kv_and_attend(const FusedLayer& layer, float* qkv, int64_t rows, int64_t qkv_width, int64_t num_heads,
                         int64_t kv_heads, int64_t head_dim, const int64_t* slot_mapping, const int32_t* tables,
                         int64_t max_blocks, const int32_t* context_lens, int64_t block_size, const bool* alone,
                         float* attn) {
  T* k_cache = layer.k_cache.data_ptr<T>();
  T* v_cache = layer.v_cache.data_ptr<T>();
  const int64_t kv_width = kv_heads * head_dim, q_width = num_heads * head_dim;
  for (int64_t r = 0; r < rows; ++r) {  // the new token's K/V first: it attends to itself
    const float* row = qkv + r * qkv_width;
    store_row(k_cache + slot_mapping[r] * kv_width, row + q_width, kv_width);
    store_row(v_cache + slot_mapping[r] * kv_width, row + q_width + kv_width, kv_width);
  }
  const int64_t group = num_heads / kv_heads;
  // Consecutive rows of one sequence (a prompt chunk) attend together; a lone row (a decode token) on its own, and
  // so does every row flagged `alone` (a decode or speculative verify row: bitwise the arithmetic of a decode
  // token). When the rows are flagged, an unflagged row is a prompt row and takes the chunk arithmetic even alone
  // (its task may hold one row: a chunk's 17th, a one-token chunk), so its K/V never depend on the chunking.
  struct Task {
    int64_t row, n, g;
  };
  std::vector<Task> tasks;
  for (int64_t g = 0; g < kv_heads; ++g) {  // heads outermost: each thread's share mixes short and long rows
    for (int64_t r = 0; r < rows;) {
      int64_t n = 1;
      while (r + n < rows && !(alone && (alone[r] || alone[r + n])) &&
             context_lens[r + n] == context_lens[r + n - 1] + 1 &&
             std::memcmp(tables + (r + n) * max_blocks, tables + r * max_blocks, max_blocks * sizeof(int32_t)) == 0) {
        ++n;
      }
      for (int64_t i = 0; i < n; i += CHUNK_ROWS) tasks.push_back({r + i, std::min<int64_t>(CHUNK_ROWS, n - i), g});
      r += n;
    }
  }
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Task& task = tasks[t];
      const float* q = qkv + task.row * qkv_width + task.g * group * head_dim;
      float* out = attn + task.row * q_width + task.g * group * head_dim;
      const int32_t* table = tables + task.row * max_blocks;
      const int64_t len = context_lens[task.row];
      if (task.n == 1 && (alone == nullptr || alone[task.row])) {
        const int64_t first = layer.window > 0 ? std::max<int64_t>(0, len - layer.window) : 0;
        dispatch_head_dim(head_dim, [&](auto dim) {
          attend_group<T, decltype(dim)::value>(q, group, k_cache, v_cache, kv_heads, task.g, table, block_size,
                                                first, len, layer.scale, out);
        });
      } else {
        dispatch_head_dim(head_dim, [&](auto dim) {
          attend_chunk<T, decltype(dim)::value>(q, qkv_width, task.n, group, k_cache, v_cache, kv_heads, task.g,
                                                table, block_size, len, layer.window, layer.scale, out, q_width);
        });
      }
    }
  });
}

void check_vector(const torch::Tensor& t, int64_t n, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == n, what,
              " must be a contiguous float32 vector of ", n);
}

}  // namespace

PackedLinear::PackedLinear(const LinearSpec& spec) {
  const auto& [fmt, qs_, d_, m_, bias_, n_] = spec;
  TORCH_CHECK(fmt == "q4" || fmt == "q8", "format must be q4 or q8, got ", fmt);
  format = fmt == "q4" ? Format::Q4 : Format::Q8;
  qs = qs_;
  d = d_;
  n = n_;
  TORCH_CHECK(qs.dim() == 3, "packed weights must be (groups, blocks, bytes)");
  k = qs.size(1) * QK;
  check_packed(qs, d, n, k, format == Format::Q4 ? 256 : 512);
  if (format == Format::Q4) {
    TORCH_CHECK(m_ && m_->scalar_type() == at::kShort && m_->numel() == d.numel() && m_->is_contiguous(),
                "Q4 needs int16 mins shaped like the scales");
    m = *m_;
  }
  if (bias_ && bias_->defined()) {
    check_vector(*bias_, n, "bias");
    bias = *bias_;
  }
}

void PackedLinear::apply(const float* x, int64_t rows, float* y) const {
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  if (format == Format::Q4) {
    gemm_impl<Format::Q4>(x, rows, k, qs.data_ptr<uint8_t>(), half_ptr(d), half_ptr(m), b, y, n);
  } else {
    gemm_impl<Format::Q8>(x, rows, k, qs.data_ptr<uint8_t>(), half_ptr(d), nullptr, b, y, n);
  }
}

FusedDecoder::FusedDecoder(int64_t hidden, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                           int64_t intermediate, double rms_eps, double rope_theta, const torch::Tensor& final_norm,
                           const std::string& activation)
    : hidden_(hidden), num_heads_(num_heads), num_kv_heads_(num_kv_heads), head_dim_(head_dim),
      intermediate_(intermediate), rms_eps_(static_cast<float>(rms_eps)), rope_theta_(rope_theta),
      gelu_(activation == "gelu_tanh"), final_norm_(final_norm) {
  TORCH_CHECK(head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256,
              "head_dim must be 16, 32, 64, 128 or 256, got ", head_dim);
  TORCH_CHECK(activation == "silu" || activation == "gelu_tanh", "activation must be silu or gelu_tanh, got ",
              activation);
  TORCH_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0 && num_heads / num_kv_heads <= 16,
              "heads must be a multiple of kv heads, at most 16 query heads per kv head");
  check_vector(final_norm, hidden, "final_norm");
}

void FusedDecoder::add_layer(const torch::Tensor& input_norm, const torch::Tensor& post_norm, const LinearSpec& qkv,
                             const LinearSpec& o, const LinearSpec& gate_up, const LinearSpec& down,
                             const torch::Tensor& k_cache, const torch::Tensor& v_cache, const LayerOptions& options) {
  FusedLayer layer{input_norm, post_norm, PackedLinear(qkv), PackedLinear(o), PackedLinear(gate_up),
                   PackedLinear(down), k_cache, v_cache};
  check_vector(input_norm, hidden_, "input_norm");
  check_vector(post_norm, hidden_, "post_norm");
  TORCH_CHECK(options.q_norm.has_value() == options.k_norm.has_value(), "q_norm and k_norm come together");
  if (options.q_norm) {
    check_vector(*options.q_norm, head_dim_, "q_norm");
    check_vector(*options.k_norm, head_dim_, "k_norm");
    layer.q_norm = *options.q_norm;
    layer.k_norm = *options.k_norm;
  }
  if (options.attn_out_norm) {
    check_vector(*options.attn_out_norm, hidden_, "attn_out_norm");
    layer.attn_out_norm = *options.attn_out_norm;
  }
  if (options.mlp_out_norm) {
    check_vector(*options.mlp_out_norm, hidden_, "mlp_out_norm");
    layer.mlp_out_norm = *options.mlp_out_norm;
  }
  TORCH_CHECK(options.window >= 0, "window must be >= 0");
  layer.window = options.window;
  layer.scale = static_cast<float>(options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(head_dim_)));
  const double theta = options.rope_theta > 0 ? options.rope_theta : rope_theta_;
  std::vector<double> inv_freq;
  for (int64_t i = 0; i < head_dim_ / 2; ++i) inv_freq.push_back(1.0 / std::pow(theta, 2.0 * i / head_dim_));
  const auto known = std::find(inv_freqs_.begin(), inv_freqs_.end(), inv_freq);
  layer.rope = known - inv_freqs_.begin();
  if (known == inv_freqs_.end()) inv_freqs_.push_back(std::move(inv_freq));
  const int64_t q_width = num_heads_ * head_dim_, kv_width = num_kv_heads_ * head_dim_;
  TORCH_CHECK(layer.qkv.k == hidden_ && layer.qkv.n == q_width + 2 * kv_width, "qkv must be (q+2kv, hidden)");
  TORCH_CHECK(layer.o.k == q_width && layer.o.n == hidden_, "o must be (hidden, heads*head_dim)");
  TORCH_CHECK(layer.gate_up.k == hidden_ && layer.gate_up.n == 2 * intermediate_, "gate_up must be (2I, hidden)");
  TORCH_CHECK(layer.down.k == intermediate_ && layer.down.n == hidden_, "down must be (hidden, I)");
  for (const auto* cache : {&k_cache, &v_cache}) {
    TORCH_CHECK(cache->dim() == 3 && cache->size(1) == num_kv_heads_ && cache->size(2) == head_dim_ &&
                    cache->is_contiguous(), "caches must be contiguous (slots, kv_heads, head_dim)");
    TORCH_CHECK(cache->scalar_type() == at::kFloat || cache->scalar_type() == at::kBFloat16,
                "caches must be float32 or bfloat16");
    TORCH_CHECK(cache->scalar_type() == k_cache.scalar_type(), "K and V caches must share a dtype");
  }
  layers_.push_back(std::move(layer));
}

torch::Tensor FusedDecoder::forward(const torch::Tensor& hidden, const torch::Tensor& positions,
                                    const torch::Tensor& slot_mapping, const torch::Tensor& block_tables,
                                    const torch::Tensor& context_lens, int64_t block_size,
                                    const c10::optional<torch::Tensor>& attend_alone) const {
  return run(hidden, positions, slot_mapping, block_tables, context_lens, block_size, attend_alone, nullptr);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> FusedDecoder::forward_tapped(
    const torch::Tensor& hidden, const torch::Tensor& positions, const torch::Tensor& slot_mapping,
    const torch::Tensor& block_tables, const torch::Tensor& context_lens, int64_t block_size,
    const c10::optional<torch::Tensor>& attend_alone, int64_t row) const {
  TORCH_CHECK(row >= 0 && row < hidden.size(0), "the tapped row must be one of the step's rows");
  const auto options = torch::TensorOptions().dtype(at::kFloat);
  torch::Tensor residuals = torch::empty({num_layers() + 1, hidden_}, options);
  torch::Tensor queries = torch::empty({num_layers(), num_heads_ * head_dim_}, options);
  const Tap tap{row, residuals.data_ptr<float>(), queries.data_ptr<float>()};
  torch::Tensor out = run(hidden, positions, slot_mapping, block_tables, context_lens, block_size, attend_alone, &tap);
  return {out, residuals, queries};
}

torch::Tensor FusedDecoder::final_norm(const torch::Tensor& residuals) const {
  TORCH_CHECK(residuals.dim() == 2 && residuals.size(1) == hidden_, "residuals must be (rows, ", hidden_, ")");
  const torch::Tensor x = residuals.to(at::kFloat).contiguous();
  torch::Tensor out = torch::empty_like(x);
  rms_norm(x.data_ptr<float>(), final_norm_.data_ptr<float>(), x.size(0), hidden_, rms_eps_, out.data_ptr<float>());
  return out;
}

torch::Tensor FusedDecoder::run(const torch::Tensor& hidden, const torch::Tensor& positions,
                                const torch::Tensor& slot_mapping, const torch::Tensor& block_tables,
                                const torch::Tensor& context_lens, int64_t block_size,
                                const c10::optional<torch::Tensor>& attend_alone, const Tap* tap) const {
  TORCH_CHECK(hidden.dim() == 2 && hidden.size(1) == hidden_, "hidden must be (rows, ", hidden_, ")");
  const int64_t rows = hidden.size(0);
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.numel() == rows, "positions: int64 (rows,)");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.numel() == rows, "slot_mapping: int64 (rows,)");
  TORCH_CHECK(block_tables.scalar_type() == at::kInt && block_tables.dim() == 2 && block_tables.size(0) == rows,
              "block_tables: int32 (rows, max_blocks)");
  TORCH_CHECK(context_lens.scalar_type() == at::kInt && context_lens.numel() == rows, "context_lens: int32 (rows,)");
  torch::Tensor alone_rows;
  if (attend_alone && attend_alone->defined()) {
    TORCH_CHECK(attend_alone->scalar_type() == at::kBool && attend_alone->numel() == rows, "attend_alone: bool (rows,)");
    alone_rows = attend_alone->contiguous();
  }
  const bool* alone = alone_rows.defined() ? alone_rows.data_ptr<bool>() : nullptr;
  const torch::Tensor pos = positions.contiguous(), slots = slot_mapping.contiguous();
  const torch::Tensor tables = block_tables.contiguous(), lens = context_lens.contiguous();
  const int64_t max_blocks = tables.size(1);
  TORCH_CHECK(!layers_.empty() && block_size >= 1, "no layers added, or block_size < 1");
  const int64_t pool_slots = layers_.front().k_cache.size(0);
  for (int64_t r = 0; r < rows; ++r) {  // a bad table would read outside the pool: refuse before touching memory
    const int64_t len = lens.data_ptr<int32_t>()[r];
    TORCH_CHECK(len >= 1 && (len + block_size - 1) / block_size <= max_blocks, "context length out of range");
    for (int64_t b = 0; b < (len + block_size - 1) / block_size; ++b) {
      const int64_t block = tables.data_ptr<int32_t>()[r * max_blocks + b];
      TORCH_CHECK(block >= 0 && (block + 1) * block_size <= pool_slots, "block table points outside the pool");
    }
    const int64_t slot = slots.data_ptr<int64_t>()[r];
    TORCH_CHECK(slot >= 0 && slot < pool_slots, "slot_mapping points outside the pool");
  }
  torch::Tensor x = hidden.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();  // the residual
  torch::Tensor out = torch::empty({rows, hidden_}, x.options());
  if (rows == 0) return out;

  const int64_t q_width = num_heads_ * head_dim_, kv_width = num_kv_heads_ * head_dim_;
  const int64_t qkv_width = q_width + 2 * kv_width, half = head_dim_ / 2;
  // Activations of one layer, reused across calls (the engine runs one step at a time).
  std::vector<float>& normed = scratch_.normed, &qkv = scratch_.qkv, &attn = scratch_.attn;
  std::vector<float>& proj = scratch_.proj, &gate_up = scratch_.gate_up, &act = scratch_.act;
  normed.resize(rows * hidden_);
  qkv.resize(rows * qkv_width);
  attn.resize(rows * q_width);
  proj.resize(rows * hidden_);
  gate_up.resize(rows * 2 * intermediate_);
  act.resize(rows * intermediate_);
  // cos/sin of each row's angles, per rotary base, shared by the layers of that base: (bases, rows, head_dim / 2)
  const int64_t bases = static_cast<int64_t>(inv_freqs_.size());
  std::vector<float> cos_all(bases * rows * half), sin_all(bases * rows * half);
  for (int64_t f = 0; f < bases; ++f) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(pos.data_ptr<int64_t>()[r]) * inv_freqs_[f][i];
        cos_all[(f * rows + r) * half + i] = static_cast<float>(std::cos(angle));
        sin_all[(f * rows + r) * half + i] = static_cast<float>(std::sin(angle));
      }
    }
  }
  float* xs = x.data_ptr<float>();
  if (tap) store_row(tap->residuals, xs + tap->row * hidden_, hidden_);  // the embedding
  for (size_t l = 0; l < layers_.size(); ++l) {
    const FusedLayer& layer = layers_[l];
    rms_norm(xs, layer.input_norm.data_ptr<float>(), rows, hidden_, rms_eps_, normed.data());
    layer.qkv.apply(normed.data(), rows, qkv.data());
    const float* cos = &cos_all[layer.rope * rows * half];
    const float* sin = &sin_all[layer.rope * rows * half];
    for (int64_t r = 0; r < rows; ++r) {
      float* row = qkv.data() + r * qkv_width;
      if (layer.q_norm.defined()) {
        head_norm(row, num_heads_, head_dim_, layer.q_norm.data_ptr<float>(), rms_eps_);
        head_norm(row + q_width, num_kv_heads_, head_dim_, layer.k_norm.data_ptr<float>(), rms_eps_);
      }
      rotate(row, num_heads_, head_dim_, &cos[r * half], &sin[r * half]);               // q
      rotate(row + q_width, num_kv_heads_, head_dim_, &cos[r * half], &sin[r * half]);  // k
    }
    if (tap) store_row(tap->queries + l * q_width, qkv.data() + tap->row * qkv_width, q_width);
    if (layer.k_cache.scalar_type() == at::kBFloat16) {
      write_kv_and_attend<at::BFloat16>(layer, qkv.data(), rows, qkv_width, num_heads_, num_kv_heads_, head_dim_,
                                        slots.data_ptr<int64_t>(), tables.data_ptr<int32_t>(), max_blocks,
                                        lens.data_ptr<int32_t>(), block_size, alone, attn.data());
    } else {
      write_kv_and_attend<float>(layer, qkv.data(), rows, qkv_width, num_heads_, num_kv_heads_, head_dim_,
                                 slots.data_ptr<int64_t>(), tables.data_ptr<int32_t>(), max_blocks,
                                 lens.data_ptr<int32_t>(), block_size, alone, attn.data());
    }
    layer.o.apply(attn.data(), rows, proj.data());
    if (layer.attn_out_norm.defined()) {
      rms_norm(proj.data(), layer.attn_out_norm.data_ptr<float>(), rows, hidden_, rms_eps_, normed.data());
      std::swap(proj, normed);
    }
    for (int64_t i = 0; i < rows * hidden_; ++i) xs[i] += proj[i];
    rms_norm(xs, layer.post_norm.data_ptr<float>(), rows, hidden_, rms_eps_, normed.data());
    layer.gate_up.apply(normed.data(), rows, gate_up.data());
    gated_act_mul(gate_up.data(), rows, intermediate_, gelu_, act.data());
    layer.down.apply(act.data(), rows, proj.data());
    if (layer.mlp_out_norm.defined()) {
      rms_norm(proj.data(), layer.mlp_out_norm.data_ptr<float>(), rows, hidden_, rms_eps_, normed.data());
      std::swap(proj, normed);
    }
    for (int64_t i = 0; i < rows * hidden_; ++i) xs[i] += proj[i];
    if (tap) store_row(tap->residuals + (l + 1) * hidden_, xs + tap->row * hidden_, hidden_);
  }
  rms_norm(xs, final_norm_.data_ptr<float>(), rows, hidden_, rms_eps_, out.data_ptr<float>());
  return out;
}

}  // namespace lucid
