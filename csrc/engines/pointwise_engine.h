#pragma once
// The pointwise engines' interface, implemented once for the CPU (csrc/cpu/) and once for CUDA
// (cuda/): one pass over input and target computes an elementwise loss (per element or reduced)
// and, when asked, its gradients. Each family (the regression losses, functions of
// input - target; the binary and margin losses, functions of (input, target)) has one translation
// unit per device, instantiated for the family's formulas (kernels/*_formulas.h).

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>

#include <variant>

#include "kernels/binary_formulas.h"
#include "kernels/regression_formulas.h"
#include "engines/bad_values.h"

namespace fusedloss {

struct PointwiseLossSpec {
  std::variant<RegressionLoss, BinaryLoss> loss;
  double param = 0;   // delta, beta, margin or alpha
  double param2 = 0;  // gamma (focal), squared (hinge, 0 or 1)
  at::Reduction::Reduction reduction = at::Reduction::Mean;  // torch's own enum
  double mean_divisor = 1.0;    // 'mean': what the sum is divided by (the elements, or the
                                // batch size for kl_div's 'batchmean')
  double grad_scale = 1.0;      // multiplies every gradient element (1/n folds in a mean)
  double backward_scale = 1.0;  // reduced: what backward multiplies grad_output by
  const char* op = "";          // the public op's name (a string literal), for errors
  BadValueKind bad_kind = BadValueKind::None;  // what an element the formula rejects is
};

// The tensors of one engine call. input, target and the outputs are contiguous with n elements.
// weight and pos_weight are contiguous and repeat with their period along the flat index (the
// period is their numel: n for a full tensor, C for a per-class vector, 1 for a scalar), or are
// undefined (1 everywhere). loss is [n] for Reduction::None, 0-d otherwise; backward_scale (0-d,
// accumulation dtype) receives spec.backward_scale when the loss is reduced. grad_input and
// grad_target are written when defined. Elements the formula rejects (input outside [0, 1] for
// BCE, labels other than +-1 for hinge): the CPU engine counts them into invalid_count (int64,
// 0-d) for the op to raise; the CUDA engine records them for a deferred error (engines/bad_values.h).
struct PointwiseOperands {
  at::Tensor input, target, weight, pos_weight;
  at::Tensor loss, backward_scale, grad_input, grad_target, invalid_count;
};

// What a formula offers, detected from its members.
template <typename F, typename T>
constexpr bool has_target_gradient = requires(F f, T v) {
  f.grad_target(v, v, v, v);
};
template <typename F, typename T>
constexpr bool validates_elements = requires(F f, T v) {
  f.valid(v, v);
};

namespace cpu {
void regression_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
void binary_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
}  // namespace cpu
namespace cuda {
void regression_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
void binary_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands);
}  // namespace cuda

}  // namespace fusedloss
