#pragma once
// The math of linear_log_probs (per-token log-probabilities and entropy of a tempered softmax,
// for RL and preference losses), shared by the CPU and CUDA engines (engines/row_engines.h).
// Per row of logits z, with s = z / T, m = max s, e_j = exp(s_j - m), E = Σ e_j, F = Σ e_j (s_j - m):
//   lse = m + log E,   log p_t = s_t - lse,   H = -Σ p_j log p_j = log E - F / E.
// Backward, for upstream gradients a (of log p_t) and b (of H), with p_j = exp(s_j - lse):
//   d/dz_j = (a ([j = t] - p_j) - b p_j (log p_j + H)) / T.
// A masked (-inf) logit has p_j = 0 and contributes 0 to F and to the gradient (not 0 · -inf).
// The true class's 1 - p_t is formed in the accumulation type, never in the logits' dtype.

#include <c10/macros/Macros.h>

#include "kernels/math.h"

namespace fusedloss {

// e_j (s_j - m) of one element, 0 where e_j = 0.
template <typename T>
C10_HOST_DEVICE inline T weighted_shift(T shifted) {
  const T e = formulas::exp_of(shifted);
  return e > T(0) ? e * shifted : T(0);
}

// H from the row's two sums E and F.
template <typename T>
C10_HOST_DEVICE inline T entropy_of(T sum_exp, T sum_weighted_shift) {
  return formulas::log_of(sum_exp) - sum_weighted_shift / sum_exp;
}

// The gradient of one logit (before the 1/T factor), given s_j - lse.
template <typename T>
C10_HOST_DEVICE inline T log_probs_grad(T log_p, bool is_target, T grad_log_prob, T grad_entropy,
                                        T entropy) {
  const T p = formulas::exp_of(log_p);
  const T spread = p > T(0) ? p * (grad_log_prob + grad_entropy * (log_p + entropy)) : T(0);
  return (is_target ? grad_log_prob : T(0)) - spread;
}

}  // namespace fusedloss
