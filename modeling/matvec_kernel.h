// The mat-vec loop of modeling/matvec.cpp, included once per instruction set (inside a `#pragma GCC target`
// region and a namespace that defines `widen`, the 16 int8 weights → 16 floats for that instruction set).
//
// y[r, o] = sum_i x[r, i] · w[i, o] (· scale[o]) for R rows of x (row-major, R ≤ 8), w (in, out) row-major.
// A block of NB × 16 consecutive outputs keeps one 16-lane accumulator per 16 outputs and row in registers;
// each step over i reads one contiguous run of the weight's row i once for all R rows, broadcasts x[r, i] and
// multiplies-adds. The weight is streamed once, front to back; the R · NB accumulators are independent
// chains, so the adds do not wait on each other. Each output is a plain left-to-right sum over i.

INLINE vf load(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
INLINE vf load(const int8_t* p) { return widen(p); }

template <typename W, int R, int NB>
INLINE void block(const float* x, int64_t in, const W* w, int64_t out, int64_t o0, float* y, const float* scale) {
  vf acc[R][NB];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < NB; ++b) acc[r][b] = vf{};
  const W* col = w + o0;
  for (int64_t i = 0; i < in; ++i, col += out) {
    vf wv[NB];
    for (int b = 0; b < NB; ++b) wv[b] = load(col + b * LANES);
    for (int r = 0; r < R; ++r) {
      const float xi = x[r * in + i];
      for (int b = 0; b < NB; ++b) acc[r][b] += xi * wv[b];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < NB; ++b) {
      vf v = acc[r][b];
      if (scale) v *= load(scale + o0 + b * LANES);
      *reinterpret_cast<vf_u*>(y + r * out + o0 + b * LANES) = v;
    }
}

// The K · 16 outputs left after the full blocks (K < NB) as one block of K accumulators, not K blocks of one:
// a single accumulator waits on its own adds (704 outputs = 5 · 128 + 64, the last 64 four times slower).
template <typename W, int R, int K>
INLINE void rest(const float* x, int64_t in, const W* w, int64_t out, int64_t o0, float* y, const float* scale,
                 int64_t k) {
  if constexpr (K > 0) {
    if (k == K) return block<W, R, K>(x, in, w, out, o0, y, scale);
    rest<W, R, K - 1>(x, in, w, out, o0, y, scale, k);
  }
}

// R rows against outputs [o, end) (o a multiple of 16): blocks of NB · 16 outputs, one block for the 16s left,
// then the last end % 16 one by one (only where end = out). NB shrinks as R grows so that R · NB accumulators
// fit the 32 vector registers of AVX-512. Each output's sum is the same whichever block computes it.
template <typename W, int R>
INLINE void rows(const float* x, int64_t in, const W* w, int64_t out, float* y, const float* scale, int64_t o,
                 int64_t end) {
  constexpr int NB = R == 1 ? 8 : R == 2 ? 6 : R == 4 ? 4 : 2;
  for (; o + NB * LANES <= end; o += NB * LANES) block<W, R, NB>(x, in, w, out, o, y, scale);
  const int64_t k = (end - o) / LANES;
  rest<W, R, NB - 1>(x, in, w, out, o, y, scale, k);
  o += k * LANES;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = o; j < end; ++j) {
      float sum = 0.f;
      for (int64_t i = 0; i < in; ++i) sum += x[r * in + i] * static_cast<float>(w[i * out + j]);
      y[r * out + j] = scale ? sum * scale[j] : sum;
    }
}

// Any number of rows against outputs [o, end): groups of 8, then 4, 2, 1 (the weight's columns o…end are
// streamed once per group). modeling/matvec.cpp hands each thread its own range of outputs.
template <typename W>
void matvec(const float* x, int64_t n, int64_t in, const W* w, int64_t out, float* y, const float* scale,
            int64_t o, int64_t end) {
  for (; n >= 8; n -= 8, x += 8 * in, y += 8 * out) rows<W, 8>(x, in, w, out, y, scale, o, end);
  if (n >= 4) rows<W, 4>(x, in, w, out, y, scale, o, end), n -= 4, x += 4 * in, y += 4 * out;
  if (n >= 2) rows<W, 2>(x, in, w, out, y, scale, o, end), n -= 2, x += 2 * in, y += 2 * out;
  if (n >= 1) rows<W, 1>(x, in, w, out, y, scale, o, end);
}
