#pragma once
// The math of triplet_margin_loss, shared by the CPU and CUDA engines (engines/row_engines.h),
// written as torch's formula over the last dimension:
//   d(x, y) = ||x - y + eps||_p,
//   loss = max(0, margin + d(a, p) - d_neg), d_neg = d(a, n), or min(d(a, n), d(p, n)) with swap
//   (a tie of the two shares the gradient in halves, as torch's minimum).
// The gradient of ||z||_p along z_i is direction(z_i) * factor(||z||), as torch's vector-norm
// backward: p = 2: z_i / ||z||; p = 1: sign(z_i); p = ±inf: sign(z_i) / k on the k elements where
// |z_i| = ||z||; p = 0: 0; other p: sign(z_i) |z_i|^(p-1) * ||z||^(1-p) (0 where z_i = 0, and for
// p > 1 where ||z|| = 0).

#include <c10/macros/Macros.h>

#include <cmath>

#include "kernels/math.h"

namespace fusedloss {

enum class NormKind : int { Zero, One, Two, Max, Min, General };

inline NormKind norm_kind(double p) {
  if (p == 0) return NormKind::Zero;
  if (p == 1) return NormKind::One;
  if (p == 2) return NormKind::Two;
  if (std::isinf(p)) return p > 0 ? NormKind::Max : NormKind::Min;
  return NormKind::General;
}

// A norm being accumulated: a sum of powers, or for ±inf the extreme |z| and how many reach it.
template <typename T>
struct NormSum {
  T value;
  T count;
};

template <NormKind kind, typename T>
C10_HOST_DEVICE inline NormSum<T> norm_start() {
  if constexpr (kind == NormKind::Min) return {T(INFINITY), T(0)};
  return {T(0), T(0)};
}

template <NormKind kind>
constexpr bool is_sum_norm = kind != NormKind::Max && kind != NormKind::Min;

// What one element adds to a norm that is a sum (p finite).
template <NormKind kind, typename T>
C10_HOST_DEVICE inline T norm_term(T z, T p) {
  if constexpr (kind == NormKind::Zero) return z != T(0) ? T(1) : T(0);
  if constexpr (kind == NormKind::One) return formulas::absolute(z);
  if constexpr (kind == NormKind::Two) return z * z;
  return formulas::pow_of(formulas::absolute(z), p);
}

template <NormKind kind, typename T>
C10_HOST_DEVICE inline void norm_add(NormSum<T>& s, T z, T p) {
  if constexpr (is_sum_norm<kind>) {
    s.value += norm_term<kind>(z, p);
  } else {
    // NaN wins, as torch's amax / amin.
    const T a = formulas::absolute(z);
    const bool better = kind == NormKind::Max ? a > s.value : a < s.value;
    if (better || a != a) {
      s.value = a;
      s.count = T(1);
    } else if (a == s.value) {
      s.count += T(1);
    }
  }
}

// Two partial norms of one row merged (the CUDA engine's lanes).
template <NormKind kind, typename T>
C10_HOST_DEVICE inline NormSum<T> norm_merge(NormSum<T> x, NormSum<T> y) {
  if constexpr (!is_sum_norm<kind>) {
    if (x.value != x.value) return x;
    if (y.value != y.value) return y;
    if (x.value == y.value) return {x.value, x.count + y.count};
    const bool x_wins = kind == NormKind::Max ? x.value > y.value : x.value < y.value;
    return x_wins ? x : y;
  } else {
    return {x.value + y.value, T(0)};
  }
}

template <NormKind kind, typename T>
C10_HOST_DEVICE inline T norm_value(NormSum<T> s, T p) {
  if constexpr (kind == NormKind::Two) return formulas::sqrt_of(s.value);
  if constexpr (kind == NormKind::General) return formulas::pow_of(s.value, T(1) / p);
  return s.value;
}

// factor(||z||): the part of the gradient shared by a row's elements.
template <NormKind kind, typename T>
C10_HOST_DEVICE inline T norm_factor(NormSum<T> s, T norm, T p) {
  if constexpr (kind == NormKind::Zero) return T(0);
  if constexpr (kind == NormKind::One) return T(1);
  if constexpr (kind == NormKind::Two) return norm == T(0) ? T(0) : T(1) / norm;
  if constexpr (kind == NormKind::General) {
    return p > T(1) && norm == T(0) ? T(0) : formulas::pow_of(norm, T(1) - p);
  }
  return T(1) / s.count;  // ±inf
}

// direction(z_i).
template <NormKind kind, typename T>
C10_HOST_DEVICE inline T norm_direction(T z, T norm, T p) {
  const T sign = z > T(0) ? T(1) : (z < T(0) ? T(-1) : T(0));
  if constexpr (kind == NormKind::Zero) return T(0);
  if constexpr (kind == NormKind::One) return sign;
  if constexpr (kind == NormKind::Two) return z;
  if constexpr (kind == NormKind::General) {
    return z == T(0) ? T(0) : sign * formulas::pow_of(formulas::absolute(z), p - T(1));
  }
  return formulas::absolute(z) == norm ? sign : T(0);  // ±inf
}

// A row's loss, and the weights of its distances' gradients, each times its norm factor and the
// row's gradient scale:
//   grad_a = w_ap dir(z_ap) + w_an dir(z_an),  grad_p = -w_ap dir(z_ap) + w_pn dir(z_pn),
//   grad_n = -w_an dir(z_an) - w_pn dir(z_pn).
template <typename T>
struct TripletRow {
  T loss;
  T w_ap, w_an, w_pn;
};

template <typename T>
C10_HOST_DEVICE inline TripletRow<T> triplet_row(T d_ap, T d_an, T d_pn, bool swap, T margin,
                                                 T scale, T f_ap, T f_an, T f_pn) {
  T share_an = T(1), share_pn = T(0), d_neg = d_an;
  if (swap) {
    if (d_pn < d_an) {
      share_an = T(0);
      share_pn = T(1);
      d_neg = d_pn;
    } else if (d_pn == d_an) {
      share_an = share_pn = T(0.5);
    } else if (d_pn != d_pn) {
      d_neg = d_pn;  // NaN wins, as torch's minimum
    }
  }
  const T over = margin + d_ap - d_neg;
  const T g = over > T(0) ? scale : T(0);
  return {formulas::relu(over), g * f_ap, -g * share_an * f_an, -g * share_pn * f_pn};
}

}  // namespace fusedloss
