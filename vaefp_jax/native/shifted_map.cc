// Eq. (14)-(15) in one pass over the (tile, point) pairs with given shifts, reading each
// exponential once: the CPU kernel behind vaefp_jax.native (an XLA FFI custom call).
//
// For one beta, with logits l_bi = -|x_i - psi_b|^2 / 2 beta, row shifts a_i and column
// shifts s_b (vaefp_jax.equations.evaluate_shifted has the derivation):
//
//   E_bi = exp(l_bi - a_i - s_b),   g_b = exp(log pi_b + s_b),
//   c_i  = sum_b g_b E_bi,          T_b = sum_i E_bi / c_i,
//   F_b  = sum_i (E_bi / c_i) x_i / T_b.
//
// XLA computes c and the column sums as two products that each read the (K, n) array E;
// here a block of ROWS data points is done at a time: its K values of E per point are
// computed once into a row buffer (in L1), c_i is summed while they are produced, and the
// column sums are accumulated from the buffer before the next block. One exp per pair.
//
// Inputs  (leading batch dimensions, equal or 1, as jax's vmap_method="expand_dims" gives):
//   psi (..., K, d), x (..., n, d), beta (...), log_prior (..., K), a (..., n), s (..., K)
// Outputs (leading dimensions the broadcast of the inputs'):
//   F (..., K, d), c (..., n), T (..., K)
// The range check on c and T and the logarithms of the state are left to the caller.

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#if defined(__SSE__)
#include <immintrin.h>
#endif
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int ROWS = 4;  // data points per block: the column accumulators are read and
                         // written once per block instead of once per point

// Vectors of the GNU C/C++ vector extension (GCC, Clang): every operation below is lane-wise
// arithmetic, so the code is vectorised whatever the auto-vectoriser decides. 32 bytes (AVX2)
// unless the compiler targets AVX-512.
#if defined(__AVX512F__)
constexpr int VBYTES = 64;
#else
constexpr int VBYTES = 32;
#endif

template <typename T> struct Vec;
template <> struct Vec<float> {
  typedef float type __attribute__((vector_size(VBYTES)));
  typedef int32_t itype __attribute__((vector_size(VBYTES)));
  typedef uint32_t utype __attribute__((vector_size(VBYTES)));
};
template <> struct Vec<double> {
  typedef double type __attribute__((vector_size(VBYTES)));
  typedef int64_t itype __attribute__((vector_size(VBYTES)));
  typedef uint64_t utype __attribute__((vector_size(VBYTES)));
};
template <typename T> using V = typename Vec<T>::type;
template <typename T> constexpr int LANES = VBYTES / sizeof(T);

template <typename T> static inline V<T> splat(T v) { return V<T>{} + v; }
template <typename T> static inline V<T> load(const T* p) { V<T> v; std::memcpy(&v, p, sizeof v); return v; }
template <typename T> static inline void store(T* p, V<T> v) { std::memcpy(p, &v, sizeof v); }
template <typename T> static inline T hsum(V<T> v) {
  T out = T(0);
  for (int j = 0; j < LANES<T>; ++j) out += v[j];
  return out;
}

// a * b + c with one rounding where the target has FMA (every x86-64 CPU with AVX2 does, and
// -march=native enables it), else two; the vector extension alone leaves the choice to the
// compiler's contraction setting (off under -std=c++17). FUSED says which: the float32
// reduction below is exact only when it is one rounding.
#if defined(__AVX512F__) || defined(__FMA__)
#define VAEFP_FUSED 1
#else
#define VAEFP_FUSED 0
#endif
static inline V<float> fmadd(V<float> a, V<float> b, V<float> c) {
#if defined(__AVX512F__)
  return (V<float>)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (V<float>)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
static inline V<double> fmadd(V<double> a, V<double> b, V<double> c) {
#if defined(__AVX512F__)
  return (V<double>)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif defined(__FMA__)
  return (V<double>)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
  return a * b + c;
#endif
}

template <typename T> struct ExpConstants;

// exp(z), lane-wise: Cody-Waite reduction z = k ln2 + r, |r| <= ln2/2, a polynomial for e^r,
// 2^k from the exponent bits, k by the round-to-nearest "magic number". ``reduce`` computes r;
// ``top``: the largest argument of vexp_pair (k <= bias there, see vexp_pair).
template <> struct ExpConstants<float> {
  static constexpr float lo = -87.33654f, hi = 88.72283f, top = 88.0f;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2 = 0.693147182f;  // ln 2 rounded: ln2 - ln 2 = 1.9e-9
  // Cephes's split: ln2_hi has 9 significant bits, so k ln2_hi is exact for |k| < 2^15
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr float magic = 12582912.0f;  // 1.5 * 2^23
  static constexpr int mantissa = 23, bias = 127;
  // With a fused multiply-add, one step: r = z - k ln2 in one FMA (k ln2 exact inside it), off
  // by |k| 1.9e-9 <= 2.5e-7 for |k| <= 128, a relative error of E that small; the two-step
  // reduction would cost one FMA more per pair for an error already below the polynomial's.
  // Without one, k ln2 would be rounded to float32 first, an error of up to ulp(88)/2 = 3.8e-6
  // in r (measured: 4.2e-6 relative in E), so two steps: z - k ln2_hi is exact (Sterbenz) and
  // k ln2_lo is small, r to float32's rounding.
  static inline V<float> reduce(V<float> z, V<float> k) {
#if VAEFP_FUSED
    return fmadd(k, splat(-ln2), z);
#else
    return (z - k * ln2_hi) - k * ln2_lo;
#endif
  }
  // Degree 5, 1 + r + r^2 q(r) with q of degree 3 fitted for least maximum relative error on
  // |r| <= ln2/2: 1.05e-7 in exact arithmetic, 1.7e-7 (2.8 ulp) evaluated in float32 (the
  // derivation, and why not Cephes's degree 7, in docs/one_exponential.md).
  static inline V<float> poly(V<float> r) {
    V<float> p = splat(8.312505669891834e-3f);
    p = fmadd(p, r, splat(4.189009591937065e-2f));
    p = fmadd(p, r, splat(1.6667114198207855e-1f));
    p = fmadd(p, r, splat(4.99992311000824e-1f));
    return fmadd(p, r * r, r) + 1.0f;
  }
};

template <> struct ExpConstants<double> {
  static constexpr double lo = -708.39, hi = 709.78, top = 709.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 6.93145751953125e-1, ln2_lo = 1.42860682030941723212e-6;
  static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int mantissa = 52, bias = 1023;
  // two steps: k ln2_hi is exact (ln2_hi has 11 significant bits), r to the working precision
  static inline V<double> reduce(V<double> z, V<double> k) {
    return fmadd(k, splat(-ln2_lo), fmadd(k, splat(-ln2_hi), z));
  }
  static inline V<double> poly(V<double> r) {  // Taylor to r^13: truncation < 5e-18 on |r| <= ln2/2
    V<double> p = splat(1.0 / 6227020800.0);
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    return p * (r * r) + r + 1.0;
  }
};

// x86's min and max, lane-wise: (a < b ? a : b) and (a > b ? a : b), so the second operand
// when either is NaN; the ternaries say the same for other targets. The clamps below choose
// NaN's fate by the operand order.
template <typename T> static inline V<T> vmin(V<T> a, V<T> b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) return (V<T>)_mm512_min_ps((__m512)a, (__m512)b);
  else return (V<T>)_mm512_min_pd((__m512d)a, (__m512d)b);
#elif defined(__AVX__)
  if constexpr (sizeof(T) == 4) return (V<T>)_mm256_min_ps((__m256)a, (__m256)b);
  else return (V<T>)_mm256_min_pd((__m256d)a, (__m256d)b);
#else
  return a < b ? a : b;
#endif
}
template <typename T> static inline V<T> vmax(V<T> a, V<T> b) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) return (V<T>)_mm512_max_ps((__m512)a, (__m512)b);
  else return (V<T>)_mm512_max_pd((__m512d)a, (__m512d)b);
#elif defined(__AVX__)
  if constexpr (sizeof(T) == 4) return (V<T>)_mm256_max_ps((__m256)a, (__m256)b);
  else return (V<T>)_mm256_max_pd((__m256d)a, (__m256d)b);
#else
  return a > b ? a : b;
#endif
}

// min(hi, max(lo, z)), NaN kept (z is the second operand of both).
template <typename T>
static inline V<T> clamp_keep_nan(V<T> z, V<T> lo, V<T> hi) { return vmin<T>(hi, vmax<T>(lo, z)); }

// exp(z) lane-wise for z in [lo, hi]: Cody-Waite reduction z = k ln2 + r, |r| <= ln2/2, a
// polynomial for e^r, 2^k from the exponent bits, k by the round-to-nearest "magic number"
// (t = z log2e + magic holds k in its low mantissa bits, so bits(t) << mantissa = k << mantissa).
// Outside [lo, hi] z is clamped: exp(lo) is the smallest normal number (2^-126 in float32),
// exp(hi) the largest finite one; NaN stays NaN. ``exact_zero``: 0 below lo instead (for
// g = pi e^s, whose pi may be 0).
template <typename T, bool exact_zero = false>
static inline V<T> vexp(V<T> z) {
  using C = ExpConstants<T>;
  using U = typename Vec<T>::utype;
  const V<T> lo = splat(C::lo), hi = splat(C::hi), magic = splat(C::magic);
  V<T> zc = clamp_keep_nan<T>(z, lo, hi);
  V<T> t = zc * C::log2e + magic;
  V<T> k = t - magic;
  V<T> r = C::reduce(zc, k);
  U bits = (reinterpret_cast<U>(t) << C::mantissa) + (U{} + (static_cast<std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>(C::bias) << C::mantissa));
  V<T> out = C::poly(r) * reinterpret_cast<V<T>>(bits);
  if constexpr (exact_zero) out = z < lo ? V<T>{} : out;
  return out;
}

// max(lo, min(z, top)), NaN to top (top is the second operand of the min).
template <typename T>
static inline V<T> clamp_nan_to_top(V<T> z, V<T> lo, V<T> top) { return vmax<T>(lo, vmin<T>(z, top)); }

// E = exp(z) of one (tile, point) pair, one multiply fewer than vexp: z is clamped to
// [lo, top], where k <= bias, and 2^k is added to the exponent bits of e^r instead of
// multiplied (e^r in [2^-1/2, 2^1/2] has the exponent field bias - 1 or bias, so the sum stays
// in [0, 2 bias] for k in [1 - bias, bias]: it never wraps). Hence: E <= e^top (2^127 in
// float32) for larger z and for NaN, which the range check rejects (E_bi <= T_b c_i, so one of
// them exceeds 2^20: vaefp_jax.equations.evaluate_shifted); at k = 1 - bias, e^r < 1 gives a
// subnormal bit pattern, read as 0 under the kernel's DAZ: an entry below the smallest normal
// number counts as 0 or as that number, within the loss the range check bounds.
template <typename T>
static inline V<T> vexp_pair(V<T> z) {
  using C = ExpConstants<T>;
  using U = typename Vec<T>::utype;
  const V<T> magic = splat(C::magic);
  V<T> zc = clamp_nan_to_top<T>(z, splat(C::lo), splat(C::top));
  V<T> t = fmadd(zc, splat(C::log2e), magic);
  V<T> k = t - magic;
  U bits = reinterpret_cast<U>(C::poly(C::reduce(zc, k))) + (reinterpret_cast<U>(t) << C::mantissa);
  return reinterpret_cast<V<T>>(bits);
}

// The argument l_bi - a_i - s_b of E, l = -sq / 2 beta = sq (scale + scale_lo): float64 as
// sq scale_lo + (sq scale - a_i), whose inner FMA rounds only the small difference (l itself
// is never rounded: ~eps^2 |l| from the product's split); float32 as (sq scale - a_i) alone,
// one FMA less, off by scale_lo sq <= eps/2 |l|, the rounding of l in XLA's form.
template <typename T>
static inline V<T> pair_argument(V<T> sq, V<T> scale, V<T> scale_lo, V<T> ai, V<T> sb) {
  if constexpr (sizeof(T) == 4) return fmadd(sq, scale, -ai) - sb;
  else return fmadd(sq, scale_lo, fmadd(sq, scale, -ai)) - sb;
}

// Scratch of one problem, reused across the batch: tiles padded to Kp, a multiple of the
// vector width (padded tiles: g = 0, shift +inf, hence E = 0; they add nothing).
template <typename T> struct Scratch {
  std::vector<T> psi_t, g, shift, rows;
  int64_t Kp = 0, K = -1, d = -1;
  void resize(int64_t K_, int64_t d_) {  // only tiles b < K are ever written after this
    if (K_ == K && d_ == d) return;
    K = K_, d = d_;
    Kp = (K + LANES<T> - 1) / LANES<T> * LANES<T>;
    psi_t.assign(d * Kp, T(0)); g.assign(Kp, T(0));
    shift.assign(Kp, std::numeric_limits<T>::infinity());
    rows.assign(ROWS * Kp, T(0));
  }
};

// The tiles of one beta into ``w``: psi transposed to (d, Kp), the column shifts s, and
// g = pi e^s (the padding keeps g = 0 and shift +inf). Once per beta and thread: the pieces of
// one beta that a thread takes share it.
template <typename T>
void load_tiles(const T* psi, const T* log_prior, const T* s, int64_t K, int64_t d, Scratch<T>& w) {
  constexpr int W = LANES<T>;
  const int64_t Kp = w.Kp;
  T* psi_t = w.psi_t.data();
  T* g = w.g.data();
  for (int64_t b = 0; b < K; ++b) {
    for (int64_t k = 0; k < d; ++k) psi_t[k * Kp + b] = psi[b * d + k];
    w.shift[b] = s[b];
    g[b] = log_prior[b] + s[b];
  }
  for (int64_t b = 0; b < K; b += W) {
    V<T> e = vexp<T, true>(load(g + b));
    for (int j = 0; j < W && b + j < K; ++j) g[b + j] = e[j];
  }
}

// Data points [i_begin, i_end) of one beta, whose tiles ``w`` holds (load_tiles): c_i into
// c_out, and their terms of T_b and of sum_i (E_bi / c_i) x_i added into total (Kp,) and num
// (d, Kp). D > 0: d known at compile time (the loops over coordinates unroll); D == 0: any d.
template <typename T, int D>
void rows_part(const T* x, T beta, const T* a, int64_t i_begin, int64_t i_end, int64_t d_runtime,
               T* c_out, T* total, T* num, Scratch<T>& w) {
  constexpr int W = LANES<T>;
  const int64_t d = D > 0 ? D : d_runtime;
  const int64_t Kp = w.Kp;
  const T* psi_t = w.psi_t.data();
  const T* g = w.g.data();
  const T* shift = w.shift.data();
  T* rows = w.rows.data();
  // l = -sq / 2 beta as sq (scale + scale_lo), scale + scale_lo = -1 / 2 beta to twice the
  // working precision: products, not a division per pair (pair_argument)
  const T two_beta = T(2) * beta;
  const T scale = T(-1) / two_beta;
  const T scale_lo = std::fma(-scale, two_beta, T(-1)) / two_beta;
  const V<T> sc = splat(scale), sc_lo = splat(scale_lo);

  T inv_c[ROWS];
  for (int64_t i0 = i_begin; i0 < i_end; i0 += ROWS) {
    const int64_t m = i_end - i0 < ROWS ? i_end - i0 : ROWS;
    for (int64_t r = 0; r < m; ++r) {
      const T* xi = x + (i0 + r) * d;
      const V<T> ai = splat(a[i0 + r]);
      T* row = rows + r * Kp;
      V<T> c = V<T>{};
      if constexpr (D > 0) {
        V<T> xv[D];
        for (int k = 0; k < D; ++k) xv[k] = splat(xi[k]);
        for (int64_t b = 0; b < Kp; b += W) {
          V<T> sq = V<T>{};
          for (int k = 0; k < D; ++k) {
            V<T> diff = xv[k] - load(psi_t + k * Kp + b);
            sq += diff * diff;
          }
          V<T> e = vexp_pair<T>(pair_argument<T>(sq, sc, sc_lo, ai, load(shift + b)));
          store(row + b, e);
          c += load(g + b) * e;
        }
      } else {
        std::fill(row, row + Kp, T(0));
        for (int64_t k = 0; k < d; ++k) {
          const V<T> xk = splat(xi[k]);
          const T* pk = psi_t + k * Kp;
          for (int64_t b = 0; b < Kp; b += W) {
            V<T> diff = xk - load(pk + b);
            store(row + b, load(row + b) + diff * diff);
          }
        }
        for (int64_t b = 0; b < Kp; b += W) {
          const V<T> sq = load(row + b);
          V<T> e = vexp_pair<T>(pair_argument<T>(sq, sc, sc_lo, ai, load(shift + b)));
          store(row + b, e);
          c += load(g + b) * e;
        }
      }
      const T ci = hsum<T>(c);
      c_out[i0 + r] = ci;
      inv_c[r] = T(1) / ci;
    }
    if (m == ROWS && D > 0) {
      constexpr int DD = D > 0 ? D : 1;
      V<T> xr[ROWS][DD];
      V<T> ic[ROWS];
      for (int r = 0; r < ROWS; ++r) {
        ic[r] = splat(inv_c[r]);
        for (int k = 0; k < DD; ++k) xr[r][k] = splat(x[(i0 + r) * d + k] * inv_c[r]);
      }
      for (int64_t b = 0; b < Kp; b += W) {
        V<T> e0 = load(rows + b), e1 = load(rows + Kp + b), e2 = load(rows + 2 * Kp + b),
             e3 = load(rows + 3 * Kp + b);
        store(total + b, load(total + b) + ((e0 * ic[0] + e1 * ic[1]) + (e2 * ic[2] + e3 * ic[3])));
        for (int k = 0; k < DD; ++k)
          store(num + k * Kp + b, load(num + k * Kp + b) +
                                      ((e0 * xr[0][k] + e1 * xr[1][k]) + (e2 * xr[2][k] + e3 * xr[3][k])));
      }
    } else {
      for (int64_t r = 0; r < m; ++r) {
        const T* row = rows + r * Kp;
        const V<T> icv = splat(inv_c[r]);
        for (int64_t b = 0; b < Kp; b += W) store(total + b, load(total + b) + load(row + b) * icv);
        for (int64_t k = 0; k < d; ++k) {
          const V<T> xk = splat(x[(i0 + r) * d + k] * inv_c[r]);
          T* nk = num + k * Kp;
          for (int64_t b = 0; b < Kp; b += W) store(nk + b, load(nk + b) + load(row + b) * xk);
        }
      }
    }
  }
}

// Subnormal numbers flushed to zero while the kernel runs (restored after): entries of E
// below the smallest normal number are negligible (vaefp_jax.equations.evaluate_shifted), and
// x86 computes with subnormal operands at a fraction of its speed.
struct FlushDenormals {
#if defined(__SSE__)
  unsigned saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Offsets of one input within the broadcast batch: stride 0 along its size-1 dimensions.
struct Broadcast {
  std::vector<int64_t> out_dims;
  bool init(const std::vector<std::vector<int64_t>>& lead, std::string& error) {
    size_t L = lead[0].size();
    out_dims.assign(L, 1);
    for (const auto& dims : lead) {
      if (dims.size() != L) { error = "batch ranks differ"; return false; }
      for (size_t j = 0; j < L; ++j) {
        if (dims[j] == 1) continue;
        if (out_dims[j] != 1 && out_dims[j] != dims[j]) { error = "batch sizes differ"; return false; }
        out_dims[j] = dims[j];
      }
    }
    return true;
  }
  int64_t count() const {
    int64_t total = 1;
    for (int64_t v : out_dims) total *= v;
    return total;
  }
  static int64_t offset(int64_t flat, const std::vector<int64_t>& out_dims, const std::vector<int64_t>& dims) {
    int64_t off = 0, stride = 1;
    for (int64_t j = static_cast<int64_t>(out_dims.size()) - 1; j >= 0; --j) {
      int64_t idx = flat % out_dims[j];
      flat /= out_dims[j];
      if (dims[j] != 1) off += idx * stride;
      stride *= dims[j];
    }
    return off;
  }
};

template <typename Dims>
std::vector<int64_t> leading(const Dims& dims, size_t core) {
  std::vector<int64_t> out;
  for (size_t j = 0; j + core < dims.size(); ++j) out.push_back(dims[j]);
  return out;
}

template <typename T>
using PartFn = void (*)(const T*, T, const T*, int64_t, int64_t, int64_t, T*, T*, T*, Scratch<T>&);

template <typename T>
PartFn<T> part_for(int64_t d) {
  switch (d) {
    case 1: return &rows_part<T, 1>;
    case 2: return &rows_part<T, 2>;
    case 3: return &rows_part<T, 3>;
    case 4: return &rows_part<T, 4>;
    case 5: return &rows_part<T, 5>;
    case 6: return &rows_part<T, 6>;
    case 7: return &rows_part<T, 7>;
    case 8: return &rows_part<T, 8>;
    default: return &rows_part<T, 0>;
  }
}

// The work of one call: ``items`` = batch x parts pieces (a part: a contiguous block of one
// beta's data points, with its own column sums), claimed one at a time from ``next`` by the
// calling thread and by helpers on XLA's intra-op thread pool. The caller waits only for
// pieces a running thread has claimed, so a helper that starts late, or never, cannot block
// it (it finds nothing left); the job is shared so that such a helper finds it alive.
template <typename T>
struct Job {
  std::vector<const T*> psi, x, log_prior, s, a;
  std::vector<T> beta;
  T* c_out = nullptr;
  int64_t n = 0, K = 0, d = 0, Kp = 0, parts = 1, items = 0, chunk = 0;
  PartFn<T> fn = nullptr;
  std::vector<T> sums;  // (items, d + 1, Kp): T_b, then the d numerators
  std::atomic<int64_t> next{0}, done{0};

  void run_items() {
    FlushDenormals flush;
    static thread_local Scratch<T> w;
    w.resize(K, d);
    int64_t loaded = -1;  // the beta whose tiles w holds, in this call
    for (;;) {
      const int64_t it = next.fetch_add(1, std::memory_order_relaxed);
      if (it >= items) return;
      const int64_t p = it / parts, j = it % parts;
      if (p != loaded) load_tiles(psi[p], log_prior[p], s[p], K, d, w), loaded = p;
      const int64_t i0 = std::min(n, j * chunk), i1 = std::min(n, i0 + chunk);
      T* acc = sums.data() + it * (d + 1) * Kp;
      std::fill(acc, acc + (d + 1) * Kp, T(0));
      fn(x[p], beta[p], a[p], i0, i1, d, c_out + p * n, acc, acc + Kp, w);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

template <ffi::DataType DT>
ffi::Error shifted_sums(ffi::ThreadPool pool, ffi::Buffer<DT> psi, ffi::Buffer<DT> x,
                        ffi::Buffer<DT> beta, ffi::Buffer<DT> log_prior, ffi::Buffer<DT> a,
                        ffi::Buffer<DT> s, ffi::ResultBuffer<DT> psi_out,
                        ffi::ResultBuffer<DT> c_out, ffi::ResultBuffer<DT> t_out) {
  using T = ffi::NativeType<DT>;
  auto pd = psi.dimensions(), xd = x.dimensions();
  if (pd.size() < 2 || xd.size() != pd.size())
    return ffi::Error::InvalidArgument("vaefp shifted map: psi and x must be (..., K, d) and (..., n, d)");
  const int64_t K = pd[pd.size() - 2], d = pd[pd.size() - 1], n = xd[xd.size() - 2];
  if (xd[xd.size() - 1] != d) return ffi::Error::InvalidArgument("vaefp shifted map: psi and x differ in d");
  if (n < 1 || K < 1 || d < 1) return ffi::Error::InvalidArgument("vaefp shifted map: empty psi or x");
  std::vector<std::vector<int64_t>> lead = {
      leading(pd, 2), leading(xd, 2), leading(beta.dimensions(), 0), leading(log_prior.dimensions(), 1),
      leading(a.dimensions(), 1), leading(s.dimensions(), 1)};
  Broadcast bc;
  std::string error;
  if (!bc.init(lead, error)) return ffi::Error::InvalidArgument("vaefp shifted map: " + error);
  const int64_t batch = bc.count();
  if (static_cast<int64_t>(psi_out->element_count()) != batch * K * d ||
      static_cast<int64_t>(c_out->element_count()) != batch * n ||
      static_cast<int64_t>(t_out->element_count()) != batch * K)
    return ffi::Error::InvalidArgument("vaefp shifted map: output shapes do not match the inputs");

  auto job = std::make_shared<Job<T>>();
  job->n = n, job->K = K, job->d = d;
  job->Kp = (K + LANES<T> - 1) / LANES<T> * LANES<T>;
  job->fn = part_for<T>(d);
  job->c_out = c_out->typed_data();
  for (int64_t p = 0; p < batch; ++p) {
    auto off = [&](int which) { return Broadcast::offset(p, bc.out_dims, lead[which]); };
    job->psi.push_back(psi.typed_data() + off(0) * K * d);
    job->x.push_back(x.typed_data() + off(1) * n * d);
    job->beta.push_back(beta.typed_data()[off(2)]);
    job->log_prior.push_back(log_prior.typed_data() + off(3) * K);
    job->a.push_back(a.typed_data() + off(4) * n);
    job->s.push_back(s.typed_data() + off(5) * K);
  }
  // Split each beta's points only when there are fewer betas than threads: into one piece per
  // thread (claimed dynamically, so that a helper that starts late takes none), never of under
  // 8 blocks of rows. Finer pieces were slower on 2 vCPUs, idle or with one of them busy
  // (benchmarks/RESULTS.md, tenth session): a piece claimed by a thread that is then
  // descheduled holds the caller until it runs again, and more pieces give more such chances.
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  int64_t parts = 1;
  if (batch < threads) {
    parts = std::min<int64_t>((threads + batch - 1) / batch, std::max<int64_t>(1, n / (8 * ROWS)));
  }
  job->parts = parts;
  job->chunk = ((n + parts - 1) / parts + ROWS - 1) / ROWS * ROWS;
  job->items = batch * parts;
  job->sums.resize(job->items * (d + 1) * job->Kp);
  const int64_t helpers = std::min(threads, job->items) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([job] { job->run_items(); });
  job->run_items();
  while (job->done.load(std::memory_order_acquire) < job->items) std::this_thread::yield();

  const int64_t Kp = job->Kp, stride = (d + 1) * Kp;
  T* po = psi_out->typed_data();
  T* to = t_out->typed_data();
  for (int64_t p = 0; p < batch; ++p) {
    // the pieces' sums added into the first, in the pieces' order whichever thread took them
    T* first = job->sums.data() + p * parts * stride;
    for (int64_t j = 1; j < parts; ++j) {
      const T* piece = first + j * stride;
      for (int64_t i = 0; i < stride; i += LANES<T>) store(first + i, load(first + i) + load(piece + i));
    }
    for (int64_t b = 0; b < K; ++b) {
      to[p * K + b] = first[b];
      for (int64_t k = 0; k < d; ++k) po[(p * K + b) * d + k] = first[(k + 1) * Kp + b] / first[b];
    }
  }
  return ffi::Error::Success();
}

}  // namespace

#define VAEFP_BIND(DT)                          \
  ffi::Ffi::Bind()                              \
      .Ctx<ffi::ThreadPool>()                   \
      .Arg<ffi::Buffer<DT>>()                   \
      .Arg<ffi::Buffer<DT>>()                   \
      .Arg<ffi::Buffer<DT>>()                   \
      .Arg<ffi::Buffer<DT>>()                   \
      .Arg<ffi::Buffer<DT>>()                   \
      .Arg<ffi::Buffer<DT>>()                   \
      .Ret<ffi::Buffer<DT>>()                   \
      .Ret<ffi::Buffer<DT>>()                   \
      .Ret<ffi::Buffer<DT>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(VaefpShiftedSumsF32, shifted_sums<ffi::F32>, VAEFP_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(VaefpShiftedSumsF64, shifted_sums<ffi::F64>, VAEFP_BIND(ffi::F64));
