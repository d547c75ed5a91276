// CPU engine of ctc_loss (interface: engines/ctc.h; lattice: kernels/ctc.h). Samples are split
// over threads; one thread runs a sample start to end, so the result does not depend on the
// thread count. Per sample:
//  - forward: the alphas of every time step, vectorized over the states (a row depends only on
//    the previous one), into the thread's scratch with lp_t(l'_s) gathered beside them;
//  - gradient (when asked): beta backward in time in two rows; at each t the states' posteriors
//    are summed per class (ascending s) into a C-length row that is zero elsewhere, and the
//    gradient row (exp(lp_t) - posterior) * scale is written once, in one pass over the classes.
// Each log-probability row is read at most twice (a gather in the forward, the whole row in the
// gradient); no lattice tensor exists.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "cpu/vector_math.h"       // SIMD (libmvec) declarations of exp/log
#include "engines/ctc.h"
#include "kernels/ctc.h"

namespace fusedloss {
namespace cpu {
namespace {

using ctc::log_add;
using ctc::log_add3;
using ctc::negative_infinity;
using formulas::exp_of;

// The lattice of a target of L labels is kept as two arrays per time step: the L + 1 blank states
// (state 2k) and the L label states (state 2k + 1). Each is contiguous, so the recursions
// vectorize over k, and a blank state needs a two-term log-sum (one exp) where the interleaved
// layout pays for three:
//   alpha:  B_t(k) = lp_t(blank) + lse(B_{t-1}(k), Lb_{t-1}(k - 1))
//           Lb_t(k) = lp_t(l_k) + lse(Lb_{t-1}(k), B_{t-1}(k), [l_k != l_{k-1}] Lb_{t-1}(k - 1))
//   beta:   B_t(k) = lp_t(blank) + lse(B_{t+1}(k), Lb_{t+1}(k))
//           Lb_t(k) = lp_t(l_k) + lse(Lb_{t+1}(k), B_{t+1}(k + 1), [l_{k+1} != l_k] Lb_{t+1}(k + 1))
// Both arrays have W lanes, L + 1 rounded up to a multiple of 8: the loops then run whole vectors
// and never fall into a scalar remainder (a scalar exp or log costs as much as a vector one).
// The extra lanes stay -inf: their log-probability is -inf, and so is every cell they read.
// An alpha row is [B (W) | -inf | Lb (W)] (the -inf is Lb(-1)); a beta row
// [B (W) | -inf | Lb (W) | -inf ...] (B(W) and Lb(W): what the last lanes read).

constexpr int64_t kLanes = 8;

// ctc::kExponentFloor as a value the compiler cannot constant-fold (see kernels/ctc.h).
template <typename acc>
inline acc opaque_floor() {
  acc floor = ctc::kExponentFloor<acc>;
#if defined(__x86_64__) || defined(__i386__)
  __asm__("" : "+x"(floor));  // "the register may have changed": the value is unknown after
#elif defined(__aarch64__)
  __asm__("" : "+w"(floor));
#else
  volatile acc unknown = floor;
  floor = unknown;
#endif
  return floor;
}

struct Layout {
  int64_t L, W;
  explicit Layout(int64_t target_length)
      : L(target_length), W((target_length + kLanes) / kLanes * kLanes) {}
  int64_t alpha_width() const { return 2 * W + 1; }
  int64_t alpha_labels() const { return W + 1; }  // offset of Lb in an alpha row
  int64_t beta_width() const { return 2 * W + 1 + kLanes; }
  int64_t beta_labels() const { return W + 1; }  // offset of Lb in a beta row
};

// A thread's scratch, reused by its samples.
template <typename acc>
struct Scratch {
  std::vector<int32_t> label_class;  // (L) the class of each label
  std::vector<acc> skip_in;          // (W) 0 where Lb(k) may be entered from Lb(k - 1), else -inf
  std::vector<acc> skip_out;         // (W) 0 where Lb(k) may go on to Lb(k + 1), else -inf
  std::vector<acc> alpha;            // T_n alpha rows
  std::vector<acc> lp_blank;         // (T_n) lp_t(blank)
  std::vector<acc> lp_labels;        // T_n rows of W: lp_t(l_k), -inf past L
  std::vector<acc> beta;             // 2 beta rows
  std::vector<acc> blank_posterior;  // (W) at one t
  std::vector<acc> label_posterior;  // (W) at one t
  std::vector<acc> posterior;        // (C) per class at one t; zero between time steps
};

// One sample's view of the operands.
struct Sample {
  int64_t n, input_length, target_length;
  const int64_t* labels;
};

template <typename acc>
FUSEDLOSS_CPU_CLONES void alpha_step(const acc* prev, acc* cur, acc lp_blank, const acc* lp_labels,
                                     const acc* skip_in, const Layout& g) {
  const acc* prev_labels = prev + g.alpha_labels();
  acc* cur_labels = cur + g.alpha_labels();
  const int64_t W = g.W;
  const acc floor = opaque_floor<acc>();
#pragma omp simd
  for (int64_t k = 0; k < W; ++k) cur[k] = lp_blank + log_add(prev[k], prev_labels[k - 1], floor);
#pragma omp simd
  for (int64_t k = 0; k < W; ++k) {
    cur_labels[k] = lp_labels[k] + log_add3(prev_labels[k], prev[k],
                                            prev_labels[k - 1] + skip_in[k], floor);
  }
}

template <typename acc>
FUSEDLOSS_CPU_CLONES void beta_step(const acc* next, acc* cur, acc lp_blank, const acc* lp_labels,
                                    const acc* skip_out, const Layout& g) {
  const acc* next_labels = next + g.beta_labels();
  acc* cur_labels = cur + g.beta_labels();
  const int64_t W = g.W;
  const acc floor = opaque_floor<acc>();
#pragma omp simd
  for (int64_t k = 0; k < W; ++k) cur[k] = lp_blank + log_add(next[k], next_labels[k], floor);
#pragma omp simd
  for (int64_t k = 0; k < W; ++k) {
    cur_labels[k] = lp_labels[k] + log_add3(next_labels[k], next[k + 1],
                                            next_labels[k + 1] + skip_out[k], floor);
  }
}

// The posteriors of time step t: each blank state's and each label state's.
template <typename acc>
FUSEDLOSS_CPU_CLONES void posteriors(const acc* alpha, const acc* beta, acc lp_blank,
                                     const acc* lp_labels, acc nll, acc* blank_posterior,
                                     acc* label_posterior, const Layout& g) {
  const acc blank_shift = nll - lp_blank;
  const int64_t W = g.W;
  const acc floor = opaque_floor<acc>();
#pragma omp simd
  for (int64_t k = 0; k < W; ++k) {
    blank_posterior[k] = ctc::posterior_of(alpha[k] + beta[k] + blank_shift, floor);
  }
  const acc* alpha_labels = alpha + g.alpha_labels();
  const acc* beta_labels = beta + g.beta_labels();
#pragma omp simd
  for (int64_t k = 0; k < W; ++k) {  // lanes past L: 0, never read
    label_posterior[k] =
        ctc::posterior_of(alpha_labels[k] + beta_labels[k] + nll - lp_labels[k], floor);
  }
}

// The gradient row of one time step: (exp(lp_t(c)) - posterior(c)) * scale.
template <typename scalar_t>
FUSEDLOSS_CPU_CLONES void gradient_row(const scalar_t* lp_row, const acc_t<scalar_t>* posterior,
                                       acc_t<scalar_t> scale, scalar_t* out, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    out[c] = store_from_acc<scalar_t>((exp_of(load_as_acc(lp_row[c])) - posterior[c]) * scale);
  }
}

template <typename scalar_t>
FUSEDLOSS_CPU_CLONES void gather_labels(const scalar_t* lp_row, const int32_t* label_class,
                                        acc_t<scalar_t>* out, int64_t L) {
#pragma omp simd
  for (int64_t k = 0; k < L; ++k) out[k] = load_as_acc(lp_row[label_class[k]]);
}

// Forward: the alpha rows of every time step; returns the loss.
template <typename scalar_t>
acc_t<scalar_t> alpha_rows(const scalar_t* lp, int64_t time_stride, int64_t blank,
                           const Sample& x, const Layout& g, Scratch<acc_t<scalar_t>>& w) {
  using acc = acc_t<scalar_t>;
  const int64_t width = g.alpha_width(), L = g.L;
  std::fill(w.alpha.begin(), w.alpha.begin() + width, negative_infinity<acc>());
  constexpr int64_t kAhead = 4;  // time steps: the gathers of one row miss the cache
  for (int64_t t = 0; t < x.input_length; ++t) {
    const scalar_t* row = lp + t * time_stride;
    if (t + kAhead < x.input_length) {
      const scalar_t* ahead = row + kAhead * time_stride;
      for (int64_t k = 0; k < L; ++k) __builtin_prefetch(ahead + w.label_class[k]);
      __builtin_prefetch(ahead + blank);
    }
    acc* lp_labels = w.lp_labels.data() + t * g.W;
    gather_labels(row, w.label_class.data(), lp_labels, L);
    w.lp_blank[t] = load_as_acc(row[blank]);
    acc* cur = w.alpha.data() + t * width;
    cur[g.alpha_labels() - 1] = negative_infinity<acc>();
    if (t == 0) {
      cur[0] = w.lp_blank[0];
      if (L > 0) cur[g.alpha_labels()] = lp_labels[0];
    } else {
      alpha_step(cur - width, cur, w.lp_blank[t], lp_labels, w.skip_in.data(), g);
    }
  }
  const acc* last = w.alpha.data() + (x.input_length - 1) * width;
  return L == 0 ? -last[0] : -log_add(last[L], last[g.alpha_labels() + L - 1]);
}

template <typename scalar_t>
void fill_rows(scalar_t* grad, int64_t row_stride, int64_t first, int64_t last, int64_t C,
               scalar_t value) {
  for (int64_t t = first; t < last; ++t) {
    std::fill(grad + t * row_stride, grad + t * row_stride + C, value);
  }
}

// Backward in time: beta, the posteriors and the gradient rows of t < T_n.
template <typename scalar_t>
void gradient_rows(const CtcOperands& o, const Sample& x, const Layout& g, acc_t<scalar_t> nll,
                   acc_t<scalar_t> scale, Scratch<acc_t<scalar_t>>& w) {
  using acc = acc_t<scalar_t>;
  const int64_t N = o.log_probs.size(1), C = o.log_probs.size(2);
  const int64_t L = g.L, width = g.beta_width();
  const scalar_t* lp = o.log_probs.const_data_ptr<scalar_t>() + x.n * o.log_probs.stride(1);
  scalar_t* grad = o.grad.mutable_data_ptr<scalar_t>() + x.n * C;
  acc* beta_cur = w.beta.data();
  acc* beta_next = beta_cur + width;
  std::fill(w.beta.begin(), w.beta.end(), negative_infinity<acc>());
  const int32_t* label_class = w.label_class.data();
  acc* posterior = w.posterior.data();
  for (int64_t t = x.input_length - 1; t >= 0; --t) {
    const acc* lp_labels = w.lp_labels.data() + t * g.W;
    if (t == x.input_length - 1) {
      beta_cur[L] = w.lp_blank[t];
      if (L > 0) beta_cur[g.beta_labels() + L - 1] = lp_labels[L - 1];
    } else {
      beta_step(beta_next, beta_cur, w.lp_blank[t], lp_labels, w.skip_out.data(), g);
    }
    posteriors(w.alpha.data() + t * g.alpha_width(), beta_cur, w.lp_blank[t], lp_labels, nll,
               w.blank_posterior.data(), w.label_posterior.data(), g);
    acc blank = 0;  // in state order: a plain loop is not reordered
    for (int64_t k = 0; k <= L; ++k) blank += w.blank_posterior[k];
    for (int64_t k = 0; k < L; ++k) posterior[label_class[k]] += w.label_posterior[k];
    posterior[o.blank] = blank;
    gradient_row<scalar_t>(lp + t * o.log_probs.stride(0), posterior, scale, grad + t * N * C, C);
    for (int64_t k = 0; k < L; ++k) posterior[label_class[k]] = acc(0);
    posterior[o.blank] = acc(0);
    std::swap(beta_cur, beta_next);
  }
}

template <typename scalar_t>
void run_sample(const CtcOperands& o, const Sample& x, Scratch<acc_t<scalar_t>>& w) {
  using acc = acc_t<scalar_t>;
  const int64_t T = o.log_probs.size(0), N = o.log_probs.size(1), C = o.log_probs.size(2);
  const Layout g(x.target_length);
  const int64_t L = g.L;
  const acc minus_inf = negative_infinity<acc>();
  w.label_class.resize(L);
  w.skip_in.assign(g.W, minus_inf);
  w.skip_out.assign(g.W, minus_inf);
  for (int64_t k = 0; k < L; ++k) {
    w.label_class[k] = static_cast<int32_t>(x.labels[k]);
    if (ctc::may_skip_into(x.labels, 2 * k + 1)) w.skip_in[k] = acc(0);
  }
  for (int64_t k = 0; k + 1 < L; ++k) w.skip_out[k] = w.skip_in[k + 1];
  w.alpha.resize(std::max<int64_t>(x.input_length, 1) * g.alpha_width());
  w.lp_blank.resize(x.input_length);
  w.lp_labels.assign(x.input_length * g.W, minus_inf);
  w.beta.resize(2 * g.beta_width());
  w.blank_posterior.resize(g.W);
  w.label_posterior.resize(g.W);

  const scalar_t* lp = o.log_probs.const_data_ptr<scalar_t>() + x.n * o.log_probs.stride(1);
  acc nll = ctc::nll_without_time_steps<acc>(L);
  if (x.input_length > 0) nll = alpha_rows(lp, o.log_probs.stride(0), o.blank, x, g, w);
  const bool infinite = nll == std::numeric_limits<acc>::infinity();
  const bool not_a_number = nll != nll;
  const acc per_target = o.mean ? acc(1) / static_cast<acc>(std::max<int64_t>(L, 1)) : acc(1);
  const acc loss = infinite && o.zero_infinity ? acc(0) : nll;
  o.nll.mutable_data_ptr<acc>()[x.n] = loss;
  o.loss_terms.mutable_data_ptr<acc>()[x.n] =
      o.mean ? loss * per_target / static_cast<acc>(N) : loss;
  if (!o.grad.defined()) return;
  scalar_t* grad = o.grad.mutable_data_ptr<scalar_t>() + x.n * C;
  fill_rows(grad, N * C, x.input_length, T, C, scalar_t(0));
  if (infinite || not_a_number) {
    // No alignment: torch's gradient is 0 with zero_infinity, else NaN (from inf - inf); a NaN
    // loss (NaN log-probabilities) has a NaN gradient.
    const scalar_t value = infinite && o.zero_infinity ? scalar_t(0)
                                                       : std::numeric_limits<scalar_t>::quiet_NaN();
    fill_rows(grad, N * C, 0, x.input_length, C, value);
    return;
  }
  gradient_rows<scalar_t>(o, x, g, nll, per_target * static_cast<acc>(o.gradient_scale), w);
}

}  // namespace

void ctc_kernel(const CtcOperands& o) {
  const int64_t N = o.log_probs.size(1), C = o.log_probs.size(2);
  const int64_t* input_lengths = o.input_lengths.const_data_ptr<int64_t>();
  const int64_t* target_lengths = o.target_lengths.const_data_ptr<int64_t>();
  const int64_t* targets = o.targets.const_data_ptr<int64_t>();
  // Where each sample's labels start (the op layer checked the lengths).
  std::vector<int64_t> offsets(N);
  for (int64_t n = 0, next = 0; n < N; ++n) {
    offsets[n] = o.concatenated ? next : n * o.targets.size(1);
    next += target_lengths[n];
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.log_probs.scalar_type(), "fusedloss_ctc_cpu", [&] {
        using acc = acc_t<scalar_t>;
        at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
          Scratch<acc> scratch;
          if (o.grad.defined()) scratch.posterior.assign(C, acc(0));
          for (int64_t n = begin; n < end; ++n) {
            const Sample x{n, input_lengths[n], target_lengths[n], targets + offsets[n]};
            run_sample<scalar_t>(o, x, scratch);
          }
        });
      });
}

}  // namespace cpu
}  // namespace fusedloss
