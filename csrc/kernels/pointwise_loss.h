#pragma once
// What one call of the pointwise engine computes, in a form both engines (CPU and CUDA) take, and
// the one place that turns a loss kind into its formula.

#include <ATen/core/Reduction.h>

#include "kernels/pointwise_formulas.h"

namespace fusedloss {

enum class PointwiseLoss { Mse, L1, Huber, SmoothL1 };

struct PointwiseLossSpec {
  PointwiseLoss loss;
  double param;                       // delta (Huber), beta (SmoothL1); unused otherwise
  at::Reduction::Reduction reduction; // torch's own enum: None, Mean, Sum
  double grad_scale = 1.0;            // multiplies every gradient element (1/n folds in a mean)
};

// Calls fn(formula) with the formula of spec.loss in accumulation type T.
template <typename T, typename Fn>
decltype(auto) visit_formula(const PointwiseLossSpec& spec, Fn&& fn) {
  switch (spec.loss) {
    case PointwiseLoss::Mse:
      return fn(formulas::MseLoss<T>{});
    case PointwiseLoss::L1:
      return fn(formulas::L1Loss<T>{});
    case PointwiseLoss::Huber:
      return fn(formulas::HuberLoss<T>{static_cast<T>(spec.param)});
    case PointwiseLoss::SmoothL1:
      break;
  }
  return fn(formulas::SmoothL1Loss<T>{static_cast<T>(spec.param)});
}

}  // namespace fusedloss

namespace at {
class Tensor;
}

namespace fusedloss {

// The engines. input and target are contiguous, of one floating dtype and one numel n. loss is
// [n] for Reduction::None and 0-d otherwise (it receives the sum or the mean). grad, when defined,
// is [n] and receives spec.grad_scale * d(loss_i)/d(input_i).
namespace cpu {
void pointwise_loss_kernel(const PointwiseLossSpec& spec, const at::Tensor& input,
                           const at::Tensor& target, const at::Tensor& loss, const at::Tensor& grad);
}
namespace cuda {
void pointwise_loss_kernel(const PointwiseLossSpec& spec, const at::Tensor& input,
                           const at::Tensor& target, const at::Tensor& loss, const at::Tensor& grad);
}

}  // namespace fusedloss
