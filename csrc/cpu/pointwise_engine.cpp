// CPU pointwise engine: one pass over input and target computes the loss (per element, or its
// sum) and, when asked, the gradient. Work is split into fixed chunks whose partial sums are added
// in chunk order, so the result is bitwise the same for any thread count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <vector>

#include "cpu/element_convert.h"
#include "kernels/pointwise_loss.h"

// The hot loop is compiled twice, for baseline x86-64 (SSE2) and for AVX2, and the loader picks
// by the CPU's features at run time (function multi-versioning). A feature, not "arch=haswell":
// an arch clone is chosen only on that CPU model, so AMD processors would never get it.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FUSEDLOSS_CPU_CLONES __attribute__((target_clones("default", "avx2")))
#else
#define FUSEDLOSS_CPU_CLONES
#endif

namespace fusedloss {
namespace cpu {
namespace {

constexpr int64_t kChunk = 1 << 15;  // elements per parallel task
constexpr int64_t kBlock = 512;      // elements summed in the accumulation type before widening

template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// One block: d = x - t, loss (stored or summed), gradient (stored when kGrad).
template <typename scalar_t, typename Formula, bool kReduce, bool kGrad>
FUSEDLOSS_CPU_CLONES double run_block(const scalar_t* x, const scalar_t* t, scalar_t* loss,
                                      scalar_t* grad, int64_t n, Formula formula,
                                      acc_t<scalar_t> grad_scale) {
  using acc = acc_t<scalar_t>;
  acc sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const acc d = load_as_acc(x[i]) - load_as_acc(t[i]);
    const acc value = formula.value(d);
    if constexpr (kReduce) {
      sum += value;
    } else {
      loss[i] = store_from_acc<scalar_t>(value);
    }
    if constexpr (kGrad) {
      grad[i] = store_from_acc<scalar_t>(formula.derivative(d) * grad_scale);
    }
  }
  return static_cast<double>(sum);
}

template <typename scalar_t, typename Formula, bool kReduce, bool kGrad>
double run(const scalar_t* x, const scalar_t* t, scalar_t* loss, scalar_t* grad, int64_t n,
           Formula formula, acc_t<scalar_t> grad_scale) {
  const int64_t num_chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> chunk_sums(static_cast<size_t>(num_chunks), 0.0);
  at::parallel_for(0, num_chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * kChunk;
      const int64_t end = std::min(n, begin + kChunk);
      double chunk_sum = 0;
      for (int64_t b = begin; b < end; b += kBlock) {
        const int64_t len = std::min(kBlock, end - b);
        chunk_sum += run_block<scalar_t, Formula, kReduce, kGrad>(
            x + b, t + b, kReduce ? nullptr : loss + b, kGrad ? grad + b : nullptr, len, formula,
            grad_scale);
      }
      chunk_sums[static_cast<size_t>(c)] = chunk_sum;
    }
  });
  double total = 0;
  for (double s : chunk_sums) total += s;
  return total;
}

template <typename scalar_t, typename Formula>
void launch(const PointwiseLossSpec& spec, const at::Tensor& input, const at::Tensor& target,
            const at::Tensor& loss, const at::Tensor& grad, Formula formula) {
  const int64_t n = input.numel();
  const scalar_t* x = input.const_data_ptr<scalar_t>();
  const scalar_t* t = target.const_data_ptr<scalar_t>();
  scalar_t* g = grad.defined() ? grad.mutable_data_ptr<scalar_t>() : nullptr;
  const auto scale = static_cast<acc_t<scalar_t>>(spec.grad_scale);
  if (spec.reduction == at::Reduction::None) {
    scalar_t* l = loss.mutable_data_ptr<scalar_t>();
    if (g) {
      run<scalar_t, Formula, false, true>(x, t, l, g, n, formula, scale);
    } else {
      run<scalar_t, Formula, false, false>(x, t, l, nullptr, n, formula, scale);
    }
    return;
  }
  double total = g ? run<scalar_t, Formula, true, true>(x, t, nullptr, g, n, formula, scale)
                   : run<scalar_t, Formula, true, false>(x, t, nullptr, nullptr, n, formula, scale);
  if (spec.reduction == at::Reduction::Mean) {
    total /= static_cast<double>(n);  // 0/0 = NaN for empty input, as torch
  }
  *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total);
}

}  // namespace

void pointwise_loss_kernel(const PointwiseLossSpec& spec, const at::Tensor& input,
                           const at::Tensor& target, const at::Tensor& loss,
                           const at::Tensor& grad) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "fusedloss_pointwise_loss_cpu", [&] {
        visit_formula<acc_t<scalar_t>>(spec, [&](auto formula) {
          launch<scalar_t>(spec, input, target, loss, grad, formula);
        });
      });
}

}  // namespace cpu
}  // namespace fusedloss
