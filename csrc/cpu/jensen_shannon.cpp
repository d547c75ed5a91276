// CPU engine of jensen_shannon_divergence (interface: engines/row_engines.h; per-element math:
// kernels/jensen_shannon.h). Per row, from cache after the first read: the two maxima, the two
// sums of exponentials, then one sweep for the divergence and the sum of its derivatives (kept
// per element in a row of scratch), and the student's gradient written once.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "cpu/vector_math.h"       // SIMD (libmvec) declarations of exp/log/pow
#include "engines/row_engines.h"
#include "kernels/jensen_shannon.h"

namespace fusedloss {
namespace cpu {
namespace {

// log Σ e^(v_i / T) of a row.
template <typename scalar_t>
FUSEDLOSS_CPU_CLONES acc_t<scalar_t> log_sum_exp(const scalar_t* v, int64_t C,
                                                 acc_t<scalar_t> inv_t) {
  using acc = acc_t<scalar_t>;
  acc top = -std::numeric_limits<acc>::infinity();
#pragma omp simd reduction(max : top)
  for (int64_t i = 0; i < C; ++i) top = std::max(top, load_as_acc(v[i]) * inv_t);
  if (top == -std::numeric_limits<acc>::infinity()) return top;  // every logit masked
  acc sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < C; ++i) sum += formulas::exp_of(load_as_acc(v[i]) * inv_t - top);
  return top + formulas::log_of(sum);
}

template <typename scalar_t, JsdKind kind, bool kGrad>
FUSEDLOSS_CPU_CLONES void rows_range(const JsdSpec& spec, const JsdOperands& o, int64_t begin,
                                     int64_t end, std::vector<acc_t<scalar_t>>& derivative) {
  using acc = acc_t<scalar_t>;
  const int64_t C = o.student.size(1);
  const scalar_t* student = o.student.const_data_ptr<scalar_t>();
  const scalar_t* teacher = o.teacher.const_data_ptr<scalar_t>();
  const int64_t* labels = o.labels.defined() ? o.labels.const_data_ptr<int64_t>() : nullptr;
  acc* row_loss = o.row_loss.mutable_data_ptr<acc>();
  scalar_t* grad = kGrad ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr;
  const acc inv_t = acc(1) / static_cast<acc>(spec.temperature);
  const acc beta = static_cast<acc>(spec.beta);
  const acc scale = static_cast<acc>(o.grad_scale) * inv_t;
  acc* g = derivative.data();
  for (int64_t r = begin; r < end; ++r) {
    scalar_t* grad_row = kGrad ? grad + r * C : nullptr;
    if (labels != nullptr && labels[r] == spec.ignore_index) {
      row_loss[r] = 0;
      if constexpr (kGrad) std::fill(grad_row, grad_row + C, scalar_t(0));
      continue;
    }
    const scalar_t* s = student + r * C;
    const scalar_t* t = teacher + r * C;
    const acc lse_s = log_sum_exp(s, C, inv_t), lse_t = log_sum_exp(t, C, inv_t);
    acc loss = 0, g_sum = 0;
#pragma omp simd reduction(+ : loss, g_sum)
    for (int64_t i = 0; i < C; ++i) {
      const auto term = jsd_term<kind>(load_as_acc(s[i]) * inv_t - lse_s,
                                       load_as_acc(t[i]) * inv_t - lse_t, beta);
      loss += term.loss;
      g_sum += term.g;
      if constexpr (kGrad) g[i] = term.g;
    }
    row_loss[r] = loss;
    if constexpr (kGrad) {
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) {
        const acc q = formulas::exp_of(load_as_acc(s[i]) * inv_t - lse_s);
        grad_row[i] = store_from_acc<scalar_t>((g[i] - q * g_sum) * scale);
      }
    }
  }
}

template <typename scalar_t, JsdKind kind>
void run(const JsdSpec& spec, const JsdOperands& o) {
  const int64_t rows = o.student.size(0), C = o.student.size(1);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t<scalar_t>> derivative(o.grad_input.defined() ? C : 0);
    o.grad_input.defined() ? rows_range<scalar_t, kind, true>(spec, o, begin, end, derivative)
                           : rows_range<scalar_t, kind, false>(spec, o, begin, end, derivative);
  });
}

}  // namespace

void jensen_shannon_kernel(const JsdSpec& spec, const JsdOperands& o) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.student.scalar_type(), "fusedloss_jensen_shannon_cpu", [&] {
        switch (jsd_kind(spec.beta)) {
          case JsdKind::ForwardKL: return run<scalar_t, JsdKind::ForwardKL>(spec, o);
          case JsdKind::ReverseKL: return run<scalar_t, JsdKind::ReverseKL>(spec, o);
          case JsdKind::General: return run<scalar_t, JsdKind::General>(spec, o);
        }
      });
}

}  // namespace cpu
}  // namespace fusedloss
