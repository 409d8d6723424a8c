// Mat-vec kernels for decoding on the CPU: y = x @ W.T for a few rows x, the weight stored transposed (in, out),
// float32 or int8 with a float scale per output. The idea and the numbers: modeling/matvec.py; the loop:
// matvec_kernel.h, compiled here for AVX-512, for AVX2 and for the baseline instruction set (GCC vector
// extensions, so the compiler picks the instructions); the CPU picks one when the library loads.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

using vf = float __attribute__((vector_size(64)));                  // 16 lanes
using vf_u = float __attribute__((vector_size(64), aligned(4)));     // an unaligned load of 16 floats
using vi32 = int32_t __attribute__((vector_size(64)));
using vi8_u = int8_t __attribute__((vector_size(16), aligned(1)));   // an unaligned load of 16 int8
constexpr int64_t LANES = 16;
#define INLINE inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define X86 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
namespace avx512 {
INLINE vf widen(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#include "matvec_kernel.h"
#include "attention_kernel.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
INLINE vf widen(const int8_t* p) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q, q)));
  vf v;
  std::memcpy(&v, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
  return v;
}
#include "matvec_kernel.h"
#include "attention_kernel.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace generic {  // the compiler's own vectors for the baseline instruction set
INLINE vf widen(const int8_t* p) {
  return __builtin_convertvector(__builtin_convertvector(*reinterpret_cast<const vi8_u*>(p), vi32), vf);
}
#include "matvec_kernel.h"
#include "attention_kernel.h"
}  // namespace generic

enum class Isa { avx512, avx2, generic };

Isa detect() {
#ifdef X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

// ATENCION_MATVEC_ISA=generic|avx2 forces a narrower instruction set (the tests run every path they can)
Isa chosen() {
  Isa isa = detect();
  const char* forced = std::getenv("ATENCION_MATVEC_ISA");
  if (forced && std::strcmp(forced, "generic") == 0) isa = Isa::generic;
  if (forced && std::strcmp(forced, "avx2") == 0 && isa == Isa::avx512) isa = Isa::avx2;
  return isa;
}

const Isa ISA = chosen();

// Threads (ATen's pool: torch.set_num_threads; inline at 1 thread) split the work where it pays: a thread per
// range of outputs in units of 16 (each output is the same sum whichever thread computes it, so the result is
// bitwise the same at any thread count), a thread per range of (row, head) pairs in the attention. A range
// gets at least GRAIN multiply-adds (~40 µs of work at one row): a hand-off costs a few µs in a quiet process,
// 15–40 µs where another OpenMP runtime shares the process (CTranslate2's, in bench/decoding.py). One row
// splits only the 256 → 8000 head; 32 rows split every product but 256 → 256, and the attention.
constexpr int64_t GRAIN = 1 << 20;

template <typename W>
void run(const float* x, int64_t n, int64_t in, const W* w, int64_t out, float* y, const float* scale) {
  const int64_t units = (out + LANES - 1) / LANES;  // the last one may hold fewer than 16 outputs
  const int64_t per_unit = std::max<int64_t>(1, n * in * LANES);  // multiply-adds
  at::parallel_for(0, units, (GRAIN + per_unit - 1) / per_unit, [&](int64_t u, int64_t u_end) {
    const int64_t o = u * LANES, end = std::min(out, u_end * LANES);
#ifdef X86
    if (ISA == Isa::avx512) return avx512::matvec<W>(x, n, in, w, out, y, scale, o, end);
    if (ISA == Isa::avx2) return avx2::matvec<W>(x, n, in, w, out, y, scale, o, end);
#endif
    generic::matvec<W>(x, n, in, w, out, y, scale, o, end);
  });
}

void attend(const float* q, const float* k, const float* v, int64_t S, int64_t D, int64_t ks, int64_t vs,
            const float* mask, int64_t mask_stride, float scale, float* scores, float* out) {
#ifdef X86
  if (ISA == Isa::avx512) return avx512::attend_one(q, k, v, S, D, ks, vs, mask, mask_stride, scale, scores, out);
  if (ISA == Isa::avx2) return avx2::attend_one(q, k, v, S, D, ks, vs, mask, mask_stride, scale, scores, out);
#endif
  generic::attend_one(q, k, v, S, D, ks, vs, mask, mask_stride, scale, scores, out);
}

std::string isa() { return ISA == Isa::avx512 ? "avx512" : ISA == Isa::avx2 ? "avx2" : "generic"; }

// ---- torch ops ------------------------------------------------------------------------------------------------
void check(const at::Tensor& x, const at::Tensor& weight_t, at::ScalarType wtype) {
  TORCH_CHECK(x.device().is_cpu() && weight_t.device().is_cpu(), "matvec: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "matvec: x must be float32, got ", x.scalar_type());
  TORCH_CHECK(weight_t.scalar_type() == wtype, "matvec: weight_t must be ", wtype, ", got ",
              weight_t.scalar_type());
  TORCH_CHECK(weight_t.dim() == 2 && weight_t.is_contiguous(), "matvec: weight_t must be a contiguous (in, out)");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == weight_t.size(0), "matvec: x (…, ", x.size(-1),
              ") does not match weight_t (", weight_t.size(0), ", ", weight_t.size(1), ")");
}

std::vector<int64_t> out_shape(const at::Tensor& x, int64_t out) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out;
  return shape;
}

at::Tensor finish(at::Tensor y, const std::optional<at::Tensor>& bias) {
  if (bias.has_value()) y.add_(*bias);
  return y;
}

at::Tensor matvec(const at::Tensor& x, const at::Tensor& weight_t, const std::optional<at::Tensor>& bias) {
  check(x, weight_t, at::kFloat);
  const at::Tensor xc = x.contiguous();
  const int64_t in = weight_t.size(0), out = weight_t.size(1);
  at::Tensor y = at::empty(out_shape(x, out), x.options());
  run<float>(xc.data_ptr<float>(), xc.numel() / in, in, weight_t.data_ptr<float>(), out, y.data_ptr<float>(), nullptr);
  return finish(y, bias);
}

at::Tensor matvec_int8(const at::Tensor& x, const at::Tensor& weight_t, const at::Tensor& scale,
                       const std::optional<at::Tensor>& bias) {
  check(x, weight_t, at::kChar);
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.numel() == weight_t.size(1),
              "matvec_int8: scale must be a contiguous float32 (out,)");
  const at::Tensor xc = x.contiguous();
  const int64_t in = weight_t.size(0), out = weight_t.size(1);
  at::Tensor y = at::empty(out_shape(x, out), x.options());
  run<int8_t>(xc.data_ptr<float>(), xc.numel() / in, in, weight_t.data_ptr<int8_t>(), out, y.data_ptr<float>(),
            scale.data_ptr<float>());
  return finish(y, bias);
}

// One query per row and head: q (B, H, 1, D), k and v (B, H, S, D) (a cache's span: rows apart by any stride,
// D contiguous and a multiple of 16), an additive float mask broadcastable to (B, H, 1, S) → (B, H, 1, D).
at::Tensor attend_one(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                      const std::optional<at::Tensor>& mask, double scale) {
  TORCH_CHECK(q_.dim() == 4 && k_.dim() == 4 && q_.size(2) == 1 && k_.sizes() == v_.sizes(),
              "attend_one: q must be (B, H, 1, D) and k, v (B, H, S, D)");
  TORCH_CHECK(q_.size(0) == k_.size(0) && q_.size(1) == k_.size(1) && q_.size(3) == k_.size(3),
              "attend_one: q ", q_.sizes(), " does not fit k ", k_.sizes());
  for (const at::Tensor* t : {&q_, &k_, &v_})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "attend_one: float32 CPU tensors only");
  const int64_t B = q_.size(0), H = q_.size(1), S = k_.size(2), D = q_.size(3);
  TORCH_CHECK(D % LANES == 0, "attend_one: the head size must be a multiple of 16, got ", D);
  const at::Tensor q = q_.stride(3) == 1 ? q_ : q_.contiguous();
  const at::Tensor k = k_.stride(3) == 1 ? k_ : k_.contiguous();
  const at::Tensor v = v_.stride(3) == 1 ? v_ : v_.contiguous();
  int64_t ms[4] = {0, 0, 0, 0};
  const float* mp = nullptr;
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK(m.scalar_type() == at::kFloat && m.dim() == 4 && m.size(2) == 1 && m.size(3) == S &&
                    (m.size(0) == 1 || m.size(0) == B) && (m.size(1) == 1 || m.size(1) == H),
                "attend_one: the mask must be float32 and broadcast to (B, H, 1, S)");
    for (int d = 0; d < 4; ++d) ms[d] = m.size(d) == 1 ? 0 : m.stride(d);
    mp = m.data_ptr<float>();
  }
  at::Tensor out = at::empty({B, H, 1, D}, q.options());
  const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float sc = static_cast<float>(scale);
  const int64_t per_pair = std::max<int64_t>(1, 2 * S * D);  // multiply-adds
  at::parallel_for(0, B * H, (GRAIN + per_pair - 1) / per_pair, [&](int64_t p, int64_t p_end) {
    thread_local std::vector<float> scores;
    scores.resize(S);
    for (; p < p_end; ++p) {
      const int64_t b = p / H, h = p % H;
      attend(qp + b * q.stride(0) + h * q.stride(1), kp + b * k.stride(0) + h * k.stride(1),
             vp + b * v.stride(0) + h * v.stride(1), S, D, k.stride(2), v.stride(2),
             mp ? mp + b * ms[0] + h * ms[1] : nullptr, ms[3], sc, scores.data(), op + p * D);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(atencion, m) {
  m.def("matvec(Tensor x, Tensor weight_t, Tensor? bias=None) -> Tensor");
  m.def("matvec_int8(Tensor x, Tensor weight_t, Tensor scale, Tensor? bias=None) -> Tensor");
  m.def("attend_one(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale) -> Tensor");
  m.def("matvec_isa() -> str", &isa);
}

TORCH_LIBRARY_IMPL(atencion, CPU, m) {
  m.impl("matvec", &matvec);
  m.impl("matvec_int8", &matvec_int8);
  m.impl("attend_one", &attend_one);
}
