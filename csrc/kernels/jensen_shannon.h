#pragma once
// The math of jensen_shannon_divergence (knowledge distillation), shared by the CPU and CUDA
// engines (engines/row_engines.h). Per row, with X = log_softmax(student / T) and
// Y = log_softmax(teacher / T), Q = e^X, P = e^Y:
//   beta = 0: forward KL(P || Q) = Σ P (Y - X);
//   beta = 1: reverse KL(Q || P) = Σ Q (X - Y);
//   otherwise the generalized JSD, M = beta P + (1 - beta) Q:
//     beta KL(P || M) + (1 - beta) KL(Q || M) = Σ beta P (Y - log M) + (1 - beta) Q (X - log M).
// A term whose probability is 0 is 0 (as kl_div's t = 0), so masked (-inf) logits are allowed.
// Its derivative g_i along X_i goes through the log-softmax: d/d(student_i) = (g_i - Q_i Σ g) / T.

#include <c10/macros/Macros.h>

#include "kernels/math.h"

namespace fusedloss {

enum class JsdKind : int { ForwardKL, ReverseKL, General };

inline JsdKind jsd_kind(double beta) {
  return beta == 0 ? JsdKind::ForwardKL : (beta == 1 ? JsdKind::ReverseKL : JsdKind::General);
}

template <typename T>
struct JsdTerm {
  T loss;  // the element's share of the row's divergence
  T g;     // its derivative along X_i
};

template <JsdKind kind, typename T>
C10_HOST_DEVICE inline JsdTerm<T> jsd_term(T x, T y, T beta) {
  const T q = formulas::exp_of(x), p = formulas::exp_of(y);
  if constexpr (kind == JsdKind::ForwardKL) {
    return {p > T(0) ? p * (y - x) : T(0), -p};
  } else if constexpr (kind == JsdKind::ReverseKL) {
    const T loss = q > T(0) ? q * (x - y) : T(0);
    return {loss, loss + q};
  } else {
    const T log_m = formulas::log_of(beta * p + (T(1) - beta) * q);
    const T student = q > T(0) ? (T(1) - beta) * q * (x - log_m) : T(0);
    const T teacher = p > T(0) ? beta * p * (y - log_m) : T(0);
    return {teacher + student, student};
  }
}

}  // namespace fusedloss
