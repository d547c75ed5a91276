#pragma once
// The CTC lattice (Graves et al., 2006), shared by the CPU and CUDA engines of ctc_loss.
//
// A target l_1..l_L becomes the extended sequence l' of S' = 2L + 1 states: blank, l_1, blank,
// l_2, ..., l_L, blank (state s is a blank when s is even, else label l_{(s+1)/2}). In log space,
//   alpha_0(0) = lp_0(blank), alpha_0(1) = lp_0(l_1), every other alpha_0(s) = -inf;
//   alpha_t(s) = lp_t(l'_s) + lse(alpha_{t-1}(s), alpha_{t-1}(s-1), [skip(s)] alpha_{t-1}(s-2)),
// where skip(s) (a jump over a blank) holds when l'_s is a label unlike l'_{s-2}. beta runs the
// same recursion backward from the last two states at t = T-1, both including lp_t(l'_s), so
//   gamma_t(s) = exp(alpha_t(s) + beta_t(s) + nll - lp_t(l'_s))
// is the posterior of state s at time t (the gammas of one t sum to 1), with nll = -log p(l | x).
// torch's gradient with respect to the log-probabilities is, per class c at t < T_n,
//   exp(lp_t(c)) - sum of gamma_t(s) over the states s with l'_s = c,
// the gradient with respect to the logits of a log_softmax before it (the exp(lp) term is zero
// through log_softmax's backward; torch uses this form, and so do we).

#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>

#include "kernels/math.h"

namespace fusedloss {
namespace ctc {

template <typename T>
C10_HOST_DEVICE inline T negative_infinity() {
  return -std::numeric_limits<T>::infinity();
}

// The exponent below which a term of a log-sum is dropped: e^-80 (1.8e-35) vanishes next to the
// largest term, 1, in float and in double. Clamping keeps -inf and NaN away from exp, whose
// vectorized forms (libmvec) handle such lanes on a slow scalar path. The CPU engine passes the
// floor as a value the compiler cannot see: with a constant it folds exp(floor) and moves the
// select after the exp, handing -inf to exp after all.
template <typename T>
constexpr T kExponentFloor = T(-80);

template <typename T>
C10_HOST_DEVICE inline T clamped_exponent(T d, T floor) {
  return d > floor ? d : floor;
}

// log(e^a + e^b + e^c) as m + log(1 + e^(mid - m) + e^(low - m)), m the largest: two exps, not
// three. -inf when all three are -inf; NaN when any is NaN (the min/max network would drop it).
template <typename T>
C10_HOST_DEVICE inline T log_add3(T a, T b, T c, T floor = kExponentFloor<T>) {
  const T high = a > b ? a : b, low = a > b ? b : a;
  const T m = high > c ? high : c, mid = high > c ? c : high;
  const T sum = m + formulas::log_of(T(1) + formulas::exp_of(clamped_exponent(mid - m, floor)) +
                                     formulas::exp_of(clamped_exponent(low - m, floor)));
  const bool any_nan = a != a || b != b || c != c;
  return any_nan ? a + b + c : (m == negative_infinity<T>() ? m : sum);
}

// log(e^a + e^b) = max + log1p(e^-|a - b|), with log_add3's -inf and NaN rules.
template <typename T>
C10_HOST_DEVICE inline T log_add(T a, T b, T floor = kExponentFloor<T>) {
  const T m = a > b ? a : b, other = a > b ? b : a;
  const T sum = m + formulas::log1p_of(formulas::exp_of(clamped_exponent(other - m, floor)));
  const bool any_nan = a != a || b != b;
  return any_nan ? a + b : (m == negative_infinity<T>() ? m : sum);
}

// e^x for a log-posterior x, at least e^floor (1.8e-35: nothing next to the posteriors that
// matter; also for the NaN of -inf - -inf in a padding lane: a sample whose loss is NaN has its
// gradient set apart).
template <typename T>
C10_HOST_DEVICE inline T posterior_of(T x, T floor = kExponentFloor<T>) {
  return formulas::exp_of(clamped_exponent(x, floor));
}

// The class of state s of the extended target (labels: the sample's L labels).
template <typename label_t>
C10_HOST_DEVICE inline int64_t state_class(const label_t* labels, int64_t s, int64_t blank) {
  return (s & 1) == 0 ? blank : static_cast<int64_t>(labels[s >> 1]);
}

// Whether state s may be entered from s - 2 (skipping the blank between two different labels).
template <typename label_t>
C10_HOST_DEVICE inline bool may_skip_into(const label_t* labels, int64_t s) {
  return (s & 1) == 1 && s >= 3 && labels[s >> 1] != labels[(s >> 1) - 1];
}

// The negative log-likelihood from the last time step's alphas of a target of length L:
// -lse(alpha(2L), alpha(2L - 1)), or -alpha(0) for an empty target.
template <typename T>
C10_HOST_DEVICE inline T nll_from_last_alphas(const T* alpha_last, int64_t target_length) {
  if (target_length == 0) return -alpha_last[0];
  return -log_add(alpha_last[2 * target_length], alpha_last[2 * target_length - 1]);
}

// The loss of a sample with no time steps: 0 for an empty target, else impossible (inf).
template <typename T>
C10_HOST_DEVICE inline T nll_without_time_steps(int64_t target_length) {
  return target_length == 0 ? T(0) : std::numeric_limits<T>::infinity();
}

}  // namespace ctc
}  // namespace fusedloss
