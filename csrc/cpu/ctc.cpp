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

using ctc::log_add3;
using ctc::negative_infinity;
using formulas::exp_of;

// -inf cells before each alpha row (its s - 1 and s - 2) and after each beta row (s + 1, s + 2).
constexpr int64_t kPad = 2;

// A thread's scratch, reused by its samples.
template <typename acc>
struct Scratch {
  std::vector<int32_t> state_class;  // (S') the class of each state
  std::vector<acc> skip_in;          // (S') 0 where s may be entered from s - 2, else -inf
  std::vector<acc> skip_out;         // (S') 0 where s may jump to s + 2, else -inf
  std::vector<acc> alpha;            // T_n rows of kPad + S'
  std::vector<acc> lp_states;        // T_n rows of S': lp_t(l'_s)
  std::vector<acc> beta;             // 2 rows of S' + kPad
  std::vector<acc> gamma;            // (S') the states' posteriors at one t
  std::vector<acc> posterior;        // (C) their sums per class; zero between time steps
};

// One sample's view of the operands.
struct Sample {
  int64_t n, input_length, target_length, states;
  const int64_t* labels;
};

template <typename scalar_t>
FUSEDLOSS_CPU_CLONES void alpha_rows(const scalar_t* lp, int64_t time_stride, const Sample& x,
                                     Scratch<acc_t<scalar_t>>& w) {
  using acc = acc_t<scalar_t>;
  const int64_t S = x.states, width = kPad + S;
  const int32_t* cls = w.state_class.data();
  const acc* skip = w.skip_in.data();
  for (int64_t t = 0; t < x.input_length; ++t) {
    const scalar_t* row = lp + t * time_stride;
    acc* lp_s = w.lp_states.data() + t * S;
#pragma omp simd
    for (int64_t s = 0; s < S; ++s) lp_s[s] = load_as_acc(row[cls[s]]);
    acc* cur = w.alpha.data() + t * width;
    cur[0] = cur[1] = negative_infinity<acc>();
    cur += kPad;
    if (t == 0) {
      std::fill(cur, cur + S, negative_infinity<acc>());
      cur[0] = lp_s[0];
      if (S > 1) cur[1] = lp_s[1];
      continue;
    }
    const acc* prev = cur - width;
#pragma omp simd
    for (int64_t s = 0; s < S; ++s) {
      cur[s] = log_add3(prev[s], prev[s - 1], prev[s - 2] + skip[s]) + lp_s[s];
    }
  }
}

// beta at t from beta at t + 1 (next), both padded after their S' states.
template <typename acc>
FUSEDLOSS_CPU_CLONES void beta_row(const acc* next, const acc* skip_out, const acc* lp_s,
                                   acc* cur, int64_t S) {
#pragma omp simd
  for (int64_t s = 0; s < S; ++s) {
    cur[s] = log_add3(next[s], next[s + 1], next[s + 2] + skip_out[s]) + lp_s[s];
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

template <typename acc>
FUSEDLOSS_CPU_CLONES void state_posteriors(const acc* alpha, const acc* beta, const acc* lp_s,
                                           acc nll, acc* gamma, int64_t S) {
#pragma omp simd
  for (int64_t s = 0; s < S; ++s) gamma[s] = exp_of(alpha[s] + beta[s] + nll - lp_s[s]);
}

template <typename scalar_t>
void fill_rows(scalar_t* grad, int64_t row_stride, int64_t first, int64_t last, int64_t C,
               scalar_t value) {
  for (int64_t t = first; t < last; ++t) std::fill(grad + t * row_stride, grad + t * row_stride + C, value);
}

template <typename scalar_t>
void gradient(const CtcOperands& o, const Sample& x, acc_t<scalar_t> nll, acc_t<scalar_t> scale,
              Scratch<acc_t<scalar_t>>& w) {
  using acc = acc_t<scalar_t>;
  const int64_t T = o.log_probs.size(0), N = o.log_probs.size(1), C = o.log_probs.size(2);
  const int64_t S = x.states, width = kPad + S;
  const scalar_t* lp = o.log_probs.const_data_ptr<scalar_t>() + x.n * o.log_probs.stride(1);
  const int64_t time_stride = o.log_probs.stride(0);
  scalar_t* grad = o.grad.mutable_data_ptr<scalar_t>() + x.n * C;
  const int64_t grad_stride = N * C;
  fill_rows(grad, grad_stride, x.input_length, T, C, scalar_t(0));
  if (nll == std::numeric_limits<acc>::infinity()) {
    // Impossible alignment: torch's gradient is NaN (0 * inf), or 0 with zero_infinity (which
    // made the loss 0 before this is called, so it does not get here).
    fill_rows(grad, grad_stride, 0, x.input_length, C, std::numeric_limits<scalar_t>::quiet_NaN());
    return;
  }
  acc* beta_cur = w.beta.data();
  acc* beta_next = beta_cur + width;
  std::fill(w.beta.begin(), w.beta.end(), negative_infinity<acc>());
  const int32_t* cls = w.state_class.data();
  acc* posterior = w.posterior.data();
  acc* gamma = w.gamma.data();
  for (int64_t t = x.input_length - 1; t >= 0; --t) {
    const acc* lp_s = w.lp_states.data() + t * S;
    if (t == x.input_length - 1) {
      beta_cur[S - 1] = lp_s[S - 1];
      if (S > 1) beta_cur[S - 2] = lp_s[S - 2];
    } else {
      beta_row(beta_next, w.skip_out.data(), lp_s, beta_cur, S);
    }
    state_posteriors(w.alpha.data() + t * width + kPad, beta_cur, lp_s, nll, gamma, S);
    for (int64_t s = 0; s < S; ++s) posterior[cls[s]] += gamma[s];
    gradient_row<scalar_t>(lp + t * time_stride, posterior, scale, grad + t * grad_stride, C);
    for (int64_t s = 0; s < S; ++s) posterior[cls[s]] = acc(0);
    std::swap(beta_cur, beta_next);
  }
}

template <typename scalar_t>
void run_sample(const CtcOperands& o, const Sample& x, Scratch<acc_t<scalar_t>>& w) {
  using acc = acc_t<scalar_t>;
  const int64_t S = x.states;
  w.state_class.resize(S);
  w.skip_in.resize(S);
  w.skip_out.resize(S);
  for (int64_t s = 0; s < S; ++s) {
    w.state_class[s] = static_cast<int32_t>(ctc::state_class(x.labels, s, o.blank));
    w.skip_in[s] = ctc::may_skip_into(x.labels, s) ? acc(0) : negative_infinity<acc>();
  }
  for (int64_t s = 0; s < S; ++s) {
    w.skip_out[s] = s + 2 < S ? w.skip_in[s + 2] : negative_infinity<acc>();
  }
  w.alpha.resize(x.input_length * (kPad + S));
  w.lp_states.resize(x.input_length * S);
  w.beta.resize(2 * (S + kPad));
  w.gamma.resize(S);

  const scalar_t* lp = o.log_probs.const_data_ptr<scalar_t>() + x.n * o.log_probs.stride(1);
  acc nll = ctc::nll_without_time_steps<acc>(x.target_length);
  if (x.input_length > 0) {
    alpha_rows(lp, o.log_probs.stride(0), x, w);
    nll = ctc::nll_from_last_alphas(w.alpha.data() + (x.input_length - 1) * (kPad + S) + kPad,
                                    x.target_length);
  }
  const bool zeroed = o.zero_infinity && nll == std::numeric_limits<acc>::infinity();
  if (zeroed) nll = acc(0);
  const int64_t N = o.log_probs.size(1);
  const acc per_target = o.mean ? acc(1) / static_cast<acc>(std::max<int64_t>(x.target_length, 1))
                                : acc(1);
  o.nll.mutable_data_ptr<acc>()[x.n] = nll;
  o.loss_terms.mutable_data_ptr<acc>()[x.n] =
      o.mean ? nll * per_target / static_cast<acc>(N) : nll;
  if (!o.grad.defined()) return;
  if (zeroed) {
    scalar_t* grad = o.grad.mutable_data_ptr<scalar_t>() + x.n * o.log_probs.size(2);
    fill_rows(grad, N * o.log_probs.size(2), 0, o.log_probs.size(0), o.log_probs.size(2),
              scalar_t(0));
    return;
  }
  gradient<scalar_t>(o, x, nll, per_target * static_cast<acc>(o.gradient_scale), w);
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
            const Sample x{n, input_lengths[n], target_lengths[n], 2 * target_lengths[n] + 1,
                           targets + offsets[n]};
            run_sample<scalar_t>(o, x, scratch);
          }
        });
      });
}

}  // namespace cpu
}  // namespace fusedloss
