// One query's attention over a row's cached keys, for modeling/matvec.cpp: included once per instruction set,
// like matvec_kernel.h (uses its vf, vf_u, LANES and INLINE).
//
// out = softmax(scale · q · Kᵀ + mask) · V for one head: q (D), K and V (S, D) rows `ks` floats apart, D a
// multiple of 16. Scores one key at a time (a 16-lane dot product), the softmax with a vectorised exp, then
// the probabilities' weighted sum of the value rows. PyTorch's CPU attention kernel is built for blocks of
// queries; for one query over a few hundred keys it spends more on setup than on this arithmetic.

INLINE float sum16(vf v) {  // a tree: 16 → 8 → 4 lanes, then 4 scalars
  using vf8 = float __attribute__((vector_size(32)));
  using vf4 = float __attribute__((vector_size(16)));
  vf8 a, b;
  std::memcpy(&a, &v, 32);
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + 32, 32);
  a += b;
  vf4 c, d;
  std::memcpy(&c, &a, 16);
  std::memcpy(&d, reinterpret_cast<const char*>(&a) + 16, 16);
  c += d;
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// e^x for 16 lanes: 2^n · p(r), n = round(x / ln 2), r = x − n · ln 2 (in two parts), p a degree-6 Taylor
// polynomial (|r| ≤ ln 2 / 2: relative error < 2e-7); e^x = 0 below −87 (masked keys: exactly zero weight).
INLINE vf exp16(vf x) {
  const vf lo = vf{} - 87.0f;
  const vf xc = x < lo ? lo : x;
  const vf shifter = vf{} + 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer
  const vf n = (xc * 1.44269504088896341f + shifter) - shifter;
  const vf r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  vf p = vf{} + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi32 bits = (__builtin_convertvector(n, vi32) + 127) << 23;
  vf two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  const vf e = p * two_n;
  return x < lo ? vf{} : e;
}

// out (D) for one head; scores: S floats of scratch; mask: S additive floats or nullptr.
void attend_one(const float* q, const float* k, const float* v, int64_t S, int64_t D, int64_t ks, int64_t vs,
                const float* mask, int64_t mask_stride, float scale, float* scores, float* out) {
  float top = -INFINITY;
  for (int64_t s = 0; s < S; ++s) {
    vf acc = vf{};
    for (int64_t d = 0; d < D; d += LANES) acc += load(q + d) * load(k + s * ks + d);
    float score = sum16(acc) * scale;
    if (mask) score += mask[s * mask_stride];
    scores[s] = score;
    top = score > top ? score : top;
  }
  float total = 0.f;
  int64_t s = 0;
  for (; s + LANES <= S; s += LANES) {
    vf e = exp16(load(scores + s) - top);
    *reinterpret_cast<vf_u*>(scores + s) = e;
    total += sum16(e);
  }
  for (; s < S; ++s) {
    scores[s] = std::exp(scores[s] - top);
    total += scores[s];
  }
  const float norm = 1.f / total;
  for (int64_t d = 0; d < D; d += LANES) {  // four chains of adds, not one
    vf acc[4] = {};
    int64_t t = 0;
    for (; t + 4 <= S; t += 4)
      for (int j = 0; j < 4; ++j) acc[j] += scores[t + j] * load(v + (t + j) * vs + d);
    for (; t < S; ++t) acc[0] += scores[t] * load(v + t * vs + d);
    *reinterpret_cast<vf_u*>(out + d) = ((acc[0] + acc[1]) + (acc[2] + acc[3])) * norm;
  }
}
