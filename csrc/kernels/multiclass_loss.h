#pragma once
// The multi-class (row) losses shared by the CPU and CUDA row engines: what one row of C logits
// contributes to the loss and to d(loss)/d(logits). Pure math: the engines' interface is
// engines/row_engines.h.
//
// Cross entropy, in one form for class-index and class-probability targets. With logits x'
// (after the optional softcap), lse = log sum_c exp(x'_c) and p_c = exp(x'_c - lse):
//   loss_row = hard * (lse - x'_t) + sum_c q_c * (lse - x'_c)          (+ z_loss * lse^2)
//   dloss/dx'_j = p_j * (hard + Q) - q_j - hard * [j == t]              (+ 2 z_loss lse p_j)
// where Q = sum_c q_c and
//   class index t, smoothing eps, class weights w:  hard = (1 - eps) w_t,  q_c = eps / C * w_c
//   probabilities y:                                hard = 0,  q_c = w_c ((1 - eps) y_c + eps / C)
// which is torch's definition term by term. Softcap: x' = s tanh(x / s), dx'/dx = 1 - (x'/s)^2.

#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>

#include "kernels/math.h"

namespace fusedloss {

namespace formulas {

template <typename T>
C10_HOST_DEVICE inline T softcapped(T x, T cap) {
  return cap > T(0) ? cap * tanh_of(x / cap) : x;
}

// d(softcapped)/dx from the capped value.
template <typename T>
C10_HOST_DEVICE inline T softcap_slope(T capped, T cap) {
  if (!(cap > T(0))) return T(1);
  const T r = capped / cap;
  return T(1) - r * r;
}

// q_c of the header comment: a probability target's smoothed, weighted share of class c
// (y = its probability, keep = 1 - eps, spread = eps / C), or the smoothing share of a class-index
// target (y unused).
template <bool kProbabilities, typename T>
C10_HOST_DEVICE inline T cross_entropy_q(T w, T y, T keep, T spread) {
  return kProbabilities ? w * (keep * y + spread) : spread * w;
}

// d(loss)/d(y_c) of a probability target: w_c (1 - eps) (lse - x'_c), times the loss's scale.
template <typename T>
C10_HOST_DEVICE inline T cross_entropy_target_grad(T w, T keep, T lse, T capped, T scale) {
  return w * keep * (lse - capped) * scale;
}

// The per-row numbers of the cross entropy once the row has been read: the loss terms and the
// coefficients of its gradient g_j = (e_j * p_scale - q_j * q_scale - [j == t] * target_scale),
// with e_j = exp(x'_j - max) (so p_j = e_j / sum).
template <typename T>
struct CrossEntropyRow {
  T lse;
  T loss;          // cross entropy of the row (without z-loss)
  T z_loss;        // z_loss * lse^2
  T p_scale;       // multiplies e_j
  T q_scale;       // multiplies q_j
  T target_scale;  // subtracted at the target class
};

// max: largest capped logit; sum: sum of exp(x'_c - max); q_total: Q; q_dot_x: sum q_c x'_c;
// hard, target_logit: the class-index part (0 for probability targets); scales: the factors of
// the loss and z-loss terms in the gradient (1/denominators for 'mean', or 1).
// The same from log(sum) computed beforehand (the CPU's small-class rows take the logs of a tile
// of rows at once, vectorized).
template <typename T>
C10_HOST_DEVICE inline CrossEntropyRow<T> cross_entropy_row_from_log(T max, T sum, T log_sum,
                                                                     T q_total, T q_dot_x, T hard,
                                                                     T target_logit, T z_coef,
                                                                     T scale, T z_scale) {
  CrossEntropyRow<T> r;
  r.lse = max + log_sum;
  r.loss = q_total * r.lse - q_dot_x;
  if (hard != T(0)) r.loss += hard * (r.lse - target_logit);
  r.z_loss = z_coef * r.lse * r.lse;
  r.p_scale = ((hard + q_total) * scale + T(2) * z_coef * r.lse * z_scale) / sum;
  r.q_scale = scale;
  r.target_scale = hard * scale;
  return r;
}

template <typename T>
C10_HOST_DEVICE inline CrossEntropyRow<T> cross_entropy_row(T max, T sum, T q_total, T q_dot_x,
                                                            T hard, T target_logit, T z_coef,
                                                            T scale, T z_scale) {
  return cross_entropy_row_from_log(max, sum, log_of(sum), q_total, q_dot_x, hard, target_logit,
                                    z_coef, scale, z_scale);
}

// The online softmax state of part of a row: its max and the sum of exp(x - max). -inf logits
// add nothing (a part with no other logit keeps max -inf and sum 0). finish() gives NaN for a row
// whose max is not finite, as torch's log_softmax does.
template <typename T>
struct SoftmaxState {
  T max = -std::numeric_limits<T>::infinity();
  T sum = 0;
  C10_HOST_DEVICE void add(T x) {
    if (x > max) {
      sum = sum * exp_of(max - x) + T(1);
      max = x;
    } else if (x != -std::numeric_limits<T>::infinity()) {
      sum += exp_of(x - max);  // NaN stays in the sum
    }
  }
  // The batched form of add(): first raise max to a batch's max, then add_at_max() each of its
  // values (one exp per value).
  C10_HOST_DEVICE void rescale_to(T batch_max) {
    if (batch_max > max) {
      if (sum != T(0)) sum *= exp_of(max - batch_max);
      max = batch_max;
    }
  }
  C10_HOST_DEVICE void add_at_max(T x) {
    if (x != -std::numeric_limits<T>::infinity()) sum += exp_of(x - max);  // NaN stays in the sum
  }
  C10_HOST_DEVICE void finish() {
    if (!(max > -std::numeric_limits<T>::infinity() && max < std::numeric_limits<T>::infinity())) {
      sum = std::numeric_limits<T>::quiet_NaN();
    }
  }
};

// Multi-class hinge of one class j != target: w_t max(0, margin - x_t + x_j)^p / C and its
// derivative with respect to x_j (the target class gets minus the sum of those).
template <typename T>
struct MultiMarginTerm {
  T value, slope;
};

template <typename T>
C10_HOST_DEVICE inline MultiMarginTerm<T> multi_margin_term(T x_j, T x_t, T margin, bool squared,
                                                            T w_over_c) {
  const T z = margin - x_t + x_j;
  if (!(z > T(0))) return {z != z ? z : T(0), z != z ? z : T(0)};  // NaN propagates
  return squared ? MultiMarginTerm<T>{w_over_c * z * z, T(2) * w_over_c * z}
                 : MultiMarginTerm<T>{w_over_c * z, w_over_c};
}

}  // namespace formulas

}  // namespace fusedloss
