// CPU engine of linear_log_probs (interface: engines/row_engines.h; math: kernels/log_probs.h).
// Forward, per row: the maximum, then one sweep for both sums (E and F). Backward: one sweep that
// writes each logit's gradient over the logit itself. Rows run in parallel, each on one thread
// from start to end, so results do not depend on the thread count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "cpu/vector_math.h"       // SIMD (libmvec) declarations of exp/log
#include "engines/row_engines.h"
#include "kernels/log_probs.h"

namespace fusedloss {
namespace cpu {
namespace {

// Rows per task: about 16K logits each.
int64_t row_grain(int64_t classes) {
  return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(classes, 1));
}

// A target the row cannot use: NaN for its outputs (the op layer raised already when checking).
bool out_of_range(int64_t target, int64_t classes) { return target < 0 || target >= classes; }

template <typename scalar_t>
FUSEDLOSS_CPU_CLONES void forward_rows(const LogProbsSpec& spec, const LogProbsOperands& o,
                                       int64_t begin, int64_t end) {
  using acc = acc_t<scalar_t>;
  const int64_t V = o.logits.size(1);
  const scalar_t* logits = o.logits.const_data_ptr<scalar_t>();
  const int64_t* target = o.target.const_data_ptr<int64_t>();
  acc* log_probs = o.log_probs.mutable_data_ptr<acc>();
  acc* entropy = o.entropy.mutable_data_ptr<acc>();
  acc* lse = o.log_sum_exp.mutable_data_ptr<acc>();
  const acc inv_t = acc(1) / static_cast<acc>(spec.temperature);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t t = target[r];
    if (t == spec.ignore_index) {
      log_probs[r] = entropy[r] = lse[r] = 0;
      continue;
    }
    const scalar_t* z = logits + r * V;
    acc top = -std::numeric_limits<acc>::infinity();
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < V; ++j) top = std::max(top, load_as_acc(z[j]) * inv_t);
    acc sum_exp = 0, sum_weighted = 0;
#pragma omp simd reduction(+ : sum_exp, sum_weighted)
    for (int64_t j = 0; j < V; ++j) {
      const acc shifted = load_as_acc(z[j]) * inv_t - top;
      sum_exp += formulas::exp_of(shifted);
      sum_weighted += weighted_shift(shifted);
    }
    lse[r] = top + formulas::log_of(sum_exp);
    entropy[r] = entropy_of(sum_exp, sum_weighted);
    log_probs[r] = out_of_range(t, V) ? std::numeric_limits<acc>::quiet_NaN()
                                      : load_as_acc(z[t]) * inv_t - lse[r];
  }
}

template <typename scalar_t>
FUSEDLOSS_CPU_CLONES void backward_rows(const LogProbsSpec& spec, const LogProbsOperands& o,
                                        int64_t begin, int64_t end) {
  using acc = acc_t<scalar_t>;
  const int64_t V = o.logits.size(1);
  const scalar_t* logits = o.logits.const_data_ptr<scalar_t>();
  scalar_t* grad = o.grad_input.mutable_data_ptr<scalar_t>();
  const int64_t* target = o.target.const_data_ptr<int64_t>();
  const acc* entropy = o.entropy.const_data_ptr<acc>();
  const acc* lse = o.log_sum_exp.const_data_ptr<acc>();
  const acc* grad_lp = o.grad_log_probs.defined() ? o.grad_log_probs.const_data_ptr<acc>() : nullptr;
  const acc* grad_h = o.grad_entropy.defined() ? o.grad_entropy.const_data_ptr<acc>() : nullptr;
  const acc inv_t = acc(1) / static_cast<acc>(spec.temperature);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* z = logits + r * V;
    scalar_t* g = grad + r * V;
    const int64_t t = target[r];
    if (t == spec.ignore_index) {
      std::fill(g, g + V, scalar_t(0));
      continue;
    }
    const acc a = grad_lp != nullptr ? grad_lp[r] : acc(0);
    const acc b = grad_h != nullptr ? grad_h[r] : acc(0);
    const acc h = entropy[r], shift = lse[r];
    // A bad target matches no class: NaN through a, so that the whole row says so.
    const acc a_row = out_of_range(t, V) ? std::numeric_limits<acc>::quiet_NaN() : a;
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) {
      const acc log_p = load_as_acc(z[j]) * inv_t - shift;
      g[j] = store_from_acc<scalar_t>(log_probs_grad(log_p, j == t, a_row, b, h) * inv_t);
    }
  }
}

}  // namespace

void log_probs_kernel(const LogProbsSpec& spec, const LogProbsOperands& o) {
  const int64_t rows = o.logits.size(0), V = o.logits.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_log_probs_cpu", [&] {
        at::parallel_for(0, rows, row_grain(V), [&](int64_t begin, int64_t end) {
          forward_rows<scalar_t>(spec, o, begin, end);
        });
      });
}

void log_probs_backward_kernel(const LogProbsSpec& spec, const LogProbsOperands& o) {
  const int64_t rows = o.logits.size(0), V = o.logits.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_log_probs_backward_cpu", [&] {
        at::parallel_for(0, rows, row_grain(V), [&](int64_t begin, int64_t end) {
          backward_rows<scalar_t>(spec, o, begin, end);
        });
      });
}

}  // namespace cpu
}  // namespace fusedloss
