// Weight-only quantized matmul for decode (few activation rows) on AVX-512 VNNI CPUs.
//
// y[M, N] = x[M, K] @ W[N, K]^T with W stored in 4 or 8 bits. Decode is bound by the bytes of W read, so
// the kernel streams W once per tile of up to MAX_MT activation rows and does the arithmetic in integers:
//   - x is quantized per block of 32 along K to int8 (x ~ dx * xq), once per call;
//   - `vpdpbusd` multiplies 4 unsigned weight bytes by 4 signed activation bytes and adds them into an int32
//     lane, so one instruction does 64 multiply-adds;
//   - each block's int32 sum is turned to float and scaled by (weight scale * dx) once per block.
//
// Layout: output rows are interleaved in groups of 16 so that the 16 int32 lanes of a zmm register are 16
// different output rows. Then a 4-byte slice of x is broadcast to every lane, no horizontal sums are needed,
// and the result of a group is one 16-float vector that is stored directly.
//   Q4 (w ~ d * q + m, q in 0..15, one d and m per row and block):
//     qs[G][B][256]  bytes. For block b of group g, byte (i * 64 + r * 4 + t), i in 0..3, r in 0..15,
//                    t in 0..3 holds q[row 16g + r][32b + 4i + t] in its low nibble and
//                    q[row 16g + r][32b + 16 + 4i + t] in its high nibble, so one 64-byte load gives, after
//                    masking, the k-slices 4i..4i+3 (low) and 16+4i.. (high) of all 16 rows.
//     d[G][B][16], m[G][B][16] fp16 (kept in int16 tensors).
//   Q8 (w ~ d * q, q in -127..127, symmetric): stored as u = q + 128 (unsigned, as vpdpbusd wants), so
//     sum(u * xq) = sum(q * xq) + 128 * sum(xq): each block's dot products start from -128 * sum(xq).
//     qs[G][B][512]  bytes: byte (j * 64 + r * 4 + t) = u[row 16g + r][32b + 4j + t], j in 0..7.
//     d[G][B][16] fp16.
// N is padded to a multiple of 16 at packing time; K must be a multiple of 32.

#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

namespace lucid {

constexpr int QK = 32;      // values per quantization block along K (weights and activations)
constexpr int NR = 16;      // output rows per interleaved group: one per int32 lane of a zmm register
constexpr int MAX_MT = 16;  // activation rows that share one read of a weight group (16 accumulators + 8 weight registers)

// ---- loads and stores of the float types we accept --------------------------------------------------------

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }

inline __m512 load16(const at::BFloat16* p) {
  // bf16 is the top half of an fp32: widen and shift.
  __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

inline void store16(float* p, __m512 v, __mmask16 mask) { _mm512_mask_storeu_ps(p, mask, v); }

inline void store16(at::BFloat16* p, __m512 v, __mmask16 mask) {
  // fp32 -> bf16 with round-to-nearest-even done in integers, so AVX512_BF16 is not required.
  __m512i bits = _mm512_castps_si512(v);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  bits = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb));
  __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(bits, 16));
  _mm256_mask_storeu_epi16(p, mask, h);
}

inline __m512 load_half16(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// ---- activation quantization ----------------------------------------------------------------------------

struct QuantizedRows {
  std::vector<int8_t> q;      // [M][K]
  std::vector<float> d;       // [M][B] scale per block
  std::vector<float> dsum;    // [M][B] d * sum(q): the Q4 min term multiplies it
  std::vector<int32_t> qoffset;  // [M][B] -128 * sum(q): undoes the Q8 weights' +128 offset
};

template <typename T>
void quantize_rows(const T* x, int64_t M, int64_t K, QuantizedRows& out) {
  const int64_t B = K / QK;
  // Grown, never shrunk: a resize that grows value-initializes the new part, and the buffers of a thread alternate
  // between decode steps (a few rows) and prompt chunks (hundreds): shrinking would zero ~0.5 MB on every chunk.
  if (static_cast<int64_t>(out.d.size()) < M * B) {
    out.q.resize(M * K);
    out.d.resize(M * B);
    out.dsum.resize(M * B);
    out.qoffset.resize(M * B);
  }
  // Parallel only when there is enough work (prefill); a decode row is ~1 us of work.
  at::parallel_for(0, M * B, 2048, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* xb = x + i * QK;  // rows are contiguous, so block i of the flattened input is row i/B, block i%B
      __m512 a = load16(xb), c = load16(xb + 16);
      float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
      float inv = amax > 0.f ? 127.f / amax : 0.f;
      // cvtps rounds to nearest even (the default MXCSR mode); |x * inv| <= 127 so no saturation happens.
      __m512i ia = _mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(inv)));
      __m512i ic = _mm512_cvtps_epi32(_mm512_mul_ps(c, _mm512_set1_ps(inv)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out.q.data() + i * QK), _mm512_cvtsepi32_epi8(ia));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out.q.data() + i * QK + 16), _mm512_cvtsepi32_epi8(ic));
      int32_t s = _mm512_reduce_add_epi32(_mm512_add_epi32(ia, ic));
      float d = amax / 127.f;
      out.d[i] = d;
      out.qoffset[i] = -128 * s;
      out.dsum[i] = d * static_cast<float>(s);
    }
  });
}

// Software prefetch LUCID_PREFETCH_BYTES ahead of the weight stream into L1 (a no-op past its end is harmless:
// prefetches never fault). The hardware prefetcher alone leaves single-thread bandwidth on the table. A tile of
// MT >= 4 rows computes long enough on each block that L1's own miss buffers, not bandwidth, cap how much of the
// stream is in flight: it also asks L2 for the weights LUCID_PREFETCH_L2_BYTES ahead. Measured at 16 rows (2
// threads, in turns): the lm_head 7% faster in every pair, prompt chunks unchanged; one row (decode of one stream,
// bound by bandwidth) does not take this path.
#ifndef LUCID_PREFETCH_BYTES
#define LUCID_PREFETCH_BYTES 2048
#endif
#ifndef LUCID_PREFETCH_L2_BYTES
#define LUCID_PREFETCH_L2_BYTES 8192
#endif
template <int MT>
inline void prefetch_ahead(const uint8_t* p, int bytes) {
  if (LUCID_PREFETCH_BYTES == 0) return;  // compile-time constant: the branch folds away
  for (int off = 0; off < bytes; off += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + LUCID_PREFETCH_BYTES + off), _MM_HINT_T0);
  }
  if constexpr (MT >= 4) {
    for (int off = 0; off < bytes; off += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(p + LUCID_PREFETCH_L2_BYTES + off), _MM_HINT_T1);
    }
  }
}

// ---- the two micro-kernels: one group of 16 output rows x MT activation rows ----------------------------

// acc + the dot products of 4 weight bytes (unsigned, 16 lanes) with the 4 activation bytes at p (signed), broadcast
// from memory by the instruction itself: GCC turns _mm512_set1_epi32(load) into a separate vpbroadcastd, one more
// vector op per 4 bytes of x, in the tiles' busiest loop.
inline __m512i dpbusd_bcast(__m512i acc, __m512i w, const int8_t* p) {
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const int32_t*>(p)));
  return acc;
}

// start + the sum over one block of 32: 8 dot products of 4 bytes, split over two chains to halve the dependency
// latency. Q8 starts from its offset correction, which saves a subtraction per row and block.
inline __m512i block_dot(const __m512i* w, const int8_t* xq, __m512i start = _mm512_setzero_si512()) {
  __m512i s0 = dpbusd_bcast(start, w[0], xq + 0);
  __m512i s1 = dpbusd_bcast(_mm512_setzero_si512(), w[1], xq + 4);
  s0 = dpbusd_bcast(s0, w[2], xq + 8);
  s1 = dpbusd_bcast(s1, w[3], xq + 12);
  s0 = dpbusd_bcast(s0, w[4], xq + 16);
  s1 = dpbusd_bcast(s1, w[5], xq + 20);
  s0 = dpbusd_bcast(s0, w[6], xq + 24);
  s1 = dpbusd_bcast(s1, w[7], xq + 28);
  return _mm512_add_epi32(s0, s1);
}

// acc[0..MT) = 0 as MT register stores. A plain loop becomes a call to memset, which cost ~4% of a prompt's prefill:
// it runs once per tile, and a tile of a 896-wide matmul is only ~28 blocks of work.
template <int MT>
inline void zero_rows(__m512* acc) {
#pragma GCC unroll 16
  for (int r = 0; r < MT; ++r) acc[r] = _mm512_setzero_ps();
}

template <int MT>
void q4_tile(const uint8_t* qs, const at::Half* wd, const at::Half* wm, int64_t B, const QuantizedRows& xr,
             int64_t m0, int64_t K, __m512* out) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 acc[MT];  // local, so the compiler keeps it in registers (out may alias anything)
  zero_rows<MT>(acc);
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* p = qs + b * 256;
    prefetch_ahead<MT>(p, 256);
    __m512i w[8];
    for (int i = 0; i < 4; ++i) {
      __m512i v = _mm512_loadu_si512(p + i * 64);
      w[i] = _mm512_and_si512(v, low4);                          // k = 4i .. 4i+3
      w[i + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);  // k = 16+4i .. 16+4i+3
    }
    const __m512 d = load_half16(wd + b * NR);
    const __m512 m = load_half16(wm + b * NR);
    for (int r = 0; r < MT; ++r) {
      const int64_t row = (m0 + r) * B + b;
      __m512i isum = block_dot(w, xr.q.data() + (m0 + r) * K + b * QK);
      // sum_k (d q + m) dx xq = d dx sum(q xq) + m (dx sum(xq))
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, _mm512_set1_ps(xr.d[row])), acc[r]);
      acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(xr.dsum[row]), acc[r]);
    }
  }
  for (int r = 0; r < MT; ++r) out[r] = acc[r];
}

template <int MT>
void q8_tile(const uint8_t* qs, const at::Half* wd, int64_t B, const QuantizedRows& xr, int64_t m0, int64_t K,
             __m512* out) {
  __m512 acc[MT];
  zero_rows<MT>(acc);
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* p = qs + b * 512;
    prefetch_ahead<MT>(p, 512);
    __m512i w[8];
    for (int j = 0; j < 8; ++j) w[j] = _mm512_loadu_si512(p + j * 64);
    const __m512 d = load_half16(wd + b * NR);
    for (int r = 0; r < MT; ++r) {
      const int64_t row = (m0 + r) * B + b;
      const __m512i isum = block_dot(w, xr.q.data() + (m0 + r) * K + b * QK, _mm512_set1_epi32(xr.qoffset[row]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, _mm512_set1_ps(xr.d[row])), acc[r]);
    }
  }
  for (int r = 0; r < MT; ++r) out[r] = acc[r];
}

// ---- drivers ----------------------------------------------------------------------------------------------

enum class Format { Q4, Q8 };

template <int MT, Format F>
void run_tile(const uint8_t* qs, const at::Half* wd, const at::Half* wm, int64_t B, const QuantizedRows& xr,
              int64_t m0, int64_t K, __m512* acc) {
  if constexpr (F == Format::Q4) {
    q4_tile<MT>(qs, wd, wm, B, xr, m0, K, acc);
  } else {
    q8_tile<MT>(qs, wd, B, xr, m0, K, acc);
  }
}

template <Format F>
void dispatch_tile(int mt, const uint8_t* qs, const at::Half* wd, const at::Half* wm, int64_t B,
                   const QuantizedRows& xr, int64_t m0, int64_t K, __m512* acc) {
  switch (mt) {
    case 1: return run_tile<1, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 2: return run_tile<2, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 3: return run_tile<3, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 4: return run_tile<4, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 5: return run_tile<5, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 6: return run_tile<6, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 7: return run_tile<7, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 8: return run_tile<8, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 9: return run_tile<9, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 10: return run_tile<10, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 11: return run_tile<11, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 12: return run_tile<12, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 13: return run_tile<13, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 14: return run_tile<14, F>(qs, wd, wm, B, xr, m0, K, acc);
    case 15: return run_tile<15, F>(qs, wd, wm, B, xr, m0, K, acc);
    default: return run_tile<MAX_MT, F>(qs, wd, wm, B, xr, m0, K, acc);
  }
}

template <Format F, typename T>
void gemm_impl(const T* x, int64_t M, int64_t K, const uint8_t* qs, const at::Half* wd, const at::Half* wm,
               const float* bias, T* y, int64_t N) {
  const int64_t B = K / QK;
  const int64_t G = (N + NR - 1) / NR;
  const int64_t group_bytes = B * (F == Format::Q4 ? 256 : 512);
  // Reused per calling thread: large fresh buffers would be page-faulted in again on every call. (Through a
  // reference: inside the parallel lambda below, the name of a thread_local would mean each worker's own copy.)
  thread_local QuantizedRows per_thread;
  QuantizedRows& xr = per_thread;
  quantize_rows(x, M, K, xr);
  // Split output groups over threads; each thread streams its own contiguous slice of the weights.
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    __m512 acc[MAX_MT];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t n0 = g * NR;
      const int nvalid = static_cast<int>(std::min<int64_t>(NR, N - n0));
      const __mmask16 mask = static_cast<__mmask16>((1u << nvalid) - 1);
      const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
      const at::Half* gm = wm ? wm + g * B * NR : nullptr;
      // Later M-tiles re-read this group's weights from L1/L2, not from memory.
      for (int64_t m0 = 0; m0 < M; m0 += MAX_MT) {
        const int mt = static_cast<int>(std::min<int64_t>(MAX_MT, M - m0));
        dispatch_tile<F>(mt, qs + g * group_bytes, wd + g * B * NR, gm, B, xr, m0, K, acc);
        for (int r = 0; r < mt; ++r) store16(y + (m0 + r) * N + n0, _mm512_add_ps(acc[r], bv), mask);
      }
    }
  });
}

// Scales and mins are stored as int16 tensors holding float16 bits (safe from a model-wide `.to(dtype)`).
inline const at::Half* half_ptr(const torch::Tensor& t) {
  return reinterpret_cast<const at::Half*>(t.data_ptr<int16_t>());
}

}  // namespace lucid
