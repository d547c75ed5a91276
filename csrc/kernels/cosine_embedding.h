#pragma once
// The per-row math of cosine_embedding_loss, shared by the CPU and CUDA engines
// (engines/row_engines.h), written as torch's formula:
//   cos = x1·x2 / sqrt((|x1|² + eps)(|x2|² + eps)), eps = 1e-12,
//   loss = 1 - cos where y = 1, max(0, cos - margin) where y = -1, 0 for any other y.
// Its gradient is a mix of the two rows: d(loss)/d(x1) = c1 x1 + c12 x2 and
// d(loss)/d(x2) = c2 x2 + c12 x1, with c12 = g / sqrt(m1 m2), c1 = -g cos / m1, c2 = -g cos / m2,
// where g = d(loss)/d(cos) (-1, 1 past the margin, else 0; clamp_min's 0 at the kink, as torch).

#include <c10/macros/Macros.h>

#include "kernels/math.h"

namespace fusedloss {

template <typename T>
struct CosineEmbeddingRow {
  T loss;
  T c1, c2, c12;  // the gradient's coefficients (times the row's gradient scale)
};

template <typename T>
C10_HOST_DEVICE inline CosineEmbeddingRow<T> cosine_embedding_row(T dot, T sq1, T sq2, T y,
                                                                  T margin, T scale) {
  constexpr T kEps = T(1e-12);
  const T m1 = sq1 + kEps, m2 = sq2 + kEps;
  const T denominator = formulas::sqrt_of(m1 * m2);
  const T cos = dot / denominator;
  CosineEmbeddingRow<T> r{T(0), T(0), T(0), T(0)};
  T g = T(0);
  if (y == T(1)) {
    r.loss = T(1) - cos;
    g = T(-1);
  } else if (y == T(-1)) {
    const T over = cos - margin;
    r.loss = formulas::relu(over);  // NaN stays NaN, as torch's clamp_min
    g = over > T(0) ? T(1) : T(0);
  }
  g *= scale;
  r.c12 = g / denominator;
  r.c1 = -g * cos / m1;
  r.c2 = -g * cos / m2;
  return r;
}

}  // namespace fusedloss
