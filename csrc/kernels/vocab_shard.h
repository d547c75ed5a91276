#pragma once
// The formulas of the vocab-parallel cross entropy's two local passes (engines/vocab_shard.h),
// shared by the CPU and CUDA kernels. A logit enters as the loss sees it, softcapped
// (multiclass_loss.h; cap 0: none). With lse the logsumexp over the whole vocabulary (merged from
// every rank's statistics) and per-row factors P, Q and T:
//   d loss / d logit_c = (exp(x_c - lse) P - [c = t] T - q_c Q) * d x_c / d logit_c.

#include <c10/macros/Macros.h>

#include <limits>
#include <type_traits>

#include "kernels/math.h"
#include "kernels/multiclass_loss.h"  // softcapped, softcap_slope

namespace fusedloss {
namespace formulas {

// The shift of a row's sum of exponentials: its max, or 0 for a shard row of -inf (whose sum is
// then 0, not NaN).
template <typename T>
C10_HOST_DEVICE inline T vocab_shard_shift(T max) {
  return max == -std::numeric_limits<T>::infinity() ? T(0) : max;
}

// The gradient of one logit; target_term is T for the target's own logit, else 0, and q_term is
// q_c Q (0 without label smoothing).
template <typename T>
C10_HOST_DEVICE inline T vocab_shard_gradient(T logit, T cap, T lse, T p_scale, T target_term,
                                              T q_term) {
  const T x = softcapped(logit, cap);
  return (exp_of(x - lse) * p_scale - target_term - q_term) * softcap_slope(x, cap);
}

// Calls visit(kCap, kSmooth) with the two flags (softcap, label smoothing) as std::true_type or
// std::false_type: each kernel is instantiated for its case, with no per-logit branch.
template <typename Visit>
void with_shard_flags(bool cap, bool smooth, Visit visit) {
  if (cap) {
    smooth ? visit(std::true_type{}, std::true_type{}) : visit(std::true_type{}, std::false_type{});
  } else {
    smooth ? visit(std::false_type{}, std::true_type{})
           : visit(std::false_type{}, std::false_type{});
  }
}

}  // namespace formulas
}  // namespace fusedloss
