// CPU row engine of the cross entropy (see kernels/multiclass_loss.h for the formulas).
//
// Rows are split over threads; each row is done by one thread in three sweeps:
//   A. the max of the logits (read 1);
//   B. e_c = exp(x'_c - max) into a per-thread scratch row, with the sums (read 2);
//   C. the gradient from the scratch row (written once), only when a gradient is asked for.
// exp is computed once per logit. A row of up to ~64K float32 logits stays in L2 between the
// sweeps. Per-row results go to row_loss; the op layer sums rows in order, so the loss is the
// same for any thread count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "cpu/vector_math.h"       // SIMD (libmvec) declarations of exp/log/tanh
#include "kernels/multiclass_loss.h"

namespace fusedloss {
namespace cpu {
namespace {

using formulas::softcap_slope;
using formulas::softcapped;

template <typename scalar_t>
struct Rows {
  using acc = acc_t<scalar_t>;
  int64_t num_classes;
  const scalar_t* logits;
  const int64_t* target_index;  // class-index targets
  const scalar_t* target_prob;  // probability targets
  const acc* weight;            // C values (ones when the op has no weight)
  acc* row_loss;
  acc* row_z_loss;  // nullptr when z_loss == 0
  scalar_t* grad_input;
  scalar_t* grad_target;
  int64_t ignore_index;
  acc smoothing, z_loss, cap, scale, z_scale;
};

// Fills a row that takes no part in the loss (ignored target: 0) or cannot (target out of range
// with the check off: NaN, never an access out of bounds).
template <typename scalar_t>
void fill_row(const Rows<scalar_t>& a, int64_t r, acc_t<scalar_t> value) {
  a.row_loss[r] = value;
  if (a.row_z_loss) a.row_z_loss[r] = value;
  if (!a.grad_input) return;
  scalar_t* g = a.grad_input + r * a.num_classes;
  const scalar_t v = store_from_acc<scalar_t>(value);
  for (int64_t c = 0; c < a.num_classes; ++c) g[c] = v;
}

// kSpread: the row has q terms (probability targets, or label smoothing). A template argument, not
// a runtime flag, so the loops stay branch-free and vectorize.
template <typename scalar_t, bool kProb, bool kCap, bool kGrad, bool kSpread>
FUSEDLOSS_CPU_CLONES void rows_range(const Rows<scalar_t>& a, int64_t begin, int64_t end,
                                     acc_t<scalar_t>* e) {
  using acc = acc_t<scalar_t>;
  const int64_t C = a.num_classes;
  const acc cap = a.cap;
  const acc* w = a.weight;
  // Probability targets: q_c = w_c (keep * y_c + spread); class indices: q_c = spread * w_c.
  const acc spread = a.smoothing / static_cast<acc>(C);
  const acc keep = acc(1) - a.smoothing;
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* x = a.logits + r * C;
    const scalar_t* y = kProb ? a.target_prob + r * C : nullptr;
    int64_t t = -1;
    acc hard = 0, target_logit = 0;
    if constexpr (!kProb) {
      t = a.target_index[r];
      if (t == a.ignore_index) {
        fill_row(a, r, acc(0));
        continue;
      }
      if (t < 0 || t >= C) {
        fill_row(a, r, std::numeric_limits<acc>::quiet_NaN());
        continue;
      }
      hard = keep * w[t];
      target_logit = softcapped(load_as_acc(x[t]), cap);
    }

    acc max = -std::numeric_limits<acc>::infinity();
#pragma omp simd reduction(max : max)
    for (int64_t c = 0; c < C; ++c) {
      const acc v = load_as_acc(x[c]);
      max = v > max ? v : max;  // NaN is skipped here and propagates through the sum below
    }
    if constexpr (kCap) max = softcapped(max, cap);  // the cap is monotonic

    acc sum = 0, q_total = 0, q_dot_x = 0;
#pragma omp simd reduction(+ : sum, q_total, q_dot_x)
    for (int64_t c = 0; c < C; ++c) {
      acc v = load_as_acc(x[c]);
      if constexpr (kCap) v = cap * formulas::tanh_of(v / cap);  // softcapped(), cap > 0 known
      const acc ec = formulas::exp_of(v - max);
      sum += ec;
      if constexpr (kGrad) e[c] = ec;
      if constexpr (kSpread) {  // without, no 0 * -inf from an -inf logit
        const acc q = formulas::cross_entropy_q<kProb>(w[c], kProb ? load_as_acc(y[c]) : acc(0),
                                                       keep, spread);
        q_total += q;
        q_dot_x += q * v;
      }
    }
    const auto row = formulas::cross_entropy_row<acc>(max, sum, q_total, q_dot_x, hard,
                                                      target_logit, a.z_loss, a.scale, a.z_scale);
    a.row_loss[r] = row.loss;
    if (a.row_z_loss) a.row_z_loss[r] = row.z_loss;
    if constexpr (!kGrad) continue;

    scalar_t* g = a.grad_input + r * C;
    scalar_t* gt = kProb && a.grad_target ? a.grad_target + r * C : nullptr;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      acc gc = e[c] * row.p_scale;
      if constexpr (kSpread) {
        gc -= formulas::cross_entropy_q<kProb>(w[c], kProb ? load_as_acc(y[c]) : acc(0), keep,
                                               spread) *
              row.q_scale;
      }
      if constexpr (kCap)
        gc *= softcap_slope(cap * formulas::tanh_of(load_as_acc(x[c]) / cap), cap);
      g[c] = store_from_acc<scalar_t>(gc);
    }
    if constexpr (!kProb) {
      const acc q = formulas::cross_entropy_q<false>(w[t], acc(0), keep, spread);
      g[t] = store_from_acc<scalar_t>((e[t] * row.p_scale - q * row.q_scale - row.target_scale) *
                                      softcap_slope(target_logit, cap));
    } else if (gt) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const acc v = softcapped(load_as_acc(x[c]), cap);
        gt[c] = store_from_acc<scalar_t>(
            formulas::cross_entropy_target_grad(w[c], keep, row.lse, v, row.q_scale));
      }
    }
  }
}

template <typename scalar_t, bool kProb, bool kCap>
void rows_range_dispatch(const Rows<scalar_t>& a, int64_t begin, int64_t end, acc_t<scalar_t>* e) {
  const bool spread = kProb || a.smoothing != 0;
  if (a.grad_input) {
    spread ? rows_range<scalar_t, kProb, kCap, true, true>(a, begin, end, e)
           : rows_range<scalar_t, kProb, kCap, true, false>(a, begin, end, e);
  } else {
    spread ? rows_range<scalar_t, kProb, kCap, false, true>(a, begin, end, e)
           : rows_range<scalar_t, kProb, kCap, false, false>(a, begin, end, e);
  }
}

template <typename scalar_t>
void run(const CrossEntropySpec& spec, const CrossEntropyOperands& o) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = o.logits.size(0), C = spec.num_classes;
  std::vector<acc> weight(static_cast<size_t>(C), acc(1));
  if (o.weight.defined()) {
    const scalar_t* w = o.weight.const_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) weight[c] = load_as_acc(w[c]);
  }
  const acc* scales = o.grad_scales.const_data_ptr<acc>();
  Rows<scalar_t> a{C,
                   o.logits.const_data_ptr<scalar_t>(),
                   spec.probability_targets ? nullptr : o.target.const_data_ptr<int64_t>(),
                   spec.probability_targets ? o.target.const_data_ptr<scalar_t>() : nullptr,
                   weight.data(),
                   o.row_loss.mutable_data_ptr<acc>(),
                   o.row_z_loss.defined() ? o.row_z_loss.mutable_data_ptr<acc>() : nullptr,
                   o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr,
                   o.grad_target.defined() ? o.grad_target.mutable_data_ptr<scalar_t>() : nullptr,
                   spec.ignore_index,
                   static_cast<acc>(spec.label_smoothing),
                   static_cast<acc>(spec.z_loss),
                   static_cast<acc>(spec.softcap),
                   scales[0],
                   scales[1]};
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(C, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc> scratch(a.grad_input ? static_cast<size_t>(C) : 0);
    const bool cap = spec.softcap > 0;
    if (spec.probability_targets) {
      cap ? rows_range_dispatch<scalar_t, true, true>(a, begin, end, scratch.data())
          : rows_range_dispatch<scalar_t, true, false>(a, begin, end, scratch.data());
    } else {
      cap ? rows_range_dispatch<scalar_t, false, true>(a, begin, end, scratch.data())
          : rows_range_dispatch<scalar_t, false, false>(a, begin, end, scratch.data());
    }
  });
}

}  // namespace

void cross_entropy_kernel(const CrossEntropySpec& spec, const CrossEntropyOperands& operands) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.logits.scalar_type(),
                                  "fusedloss_cross_entropy_cpu",
                                  [&] { run<scalar_t>(spec, operands); });
}

}  // namespace cpu
}  // namespace fusedloss
