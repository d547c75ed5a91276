#pragma once
// Operator-layer pieces shared by nll_loss and linear_cross_entropy (and the options check of
// cross_entropy): the class-index target check, the denominators of 'mean', the gradient scales
// the row engine folds in, and the reduction of per-row losses. Device independent (ATen ops).

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "ops/arguments.h"

namespace fusedloss {
namespace ops {

// label_smoothing in [0, 1], z_loss >= 0, softcap > 0 when given (all finite).
void check_cross_entropy_options(c10::string_view op, double label_smoothing, double z_loss,
                                 std::optional<double> softcap);

// Class-index targets as int64 (R), checked to lie in [0, C) or equal ignore_index: at once on
// the CPU; on CUDA by a kernel that records the first bad one for a deferred IndexError (no
// synchronization, see fusedloss/errors.h). check=false skips it: rows with an out-of-range
// target then get a NaN loss (never an access out of bounds).
at::Tensor checked_class_targets(c10::string_view op, const at::Tensor& target, int64_t classes,
                                 int64_t ignore_index, bool check);

// Per row of class-index targets t (int64): the weight of the target class (1 without weights),
// 0 where the target is ignored, NaN where it is out of range. Never indexes out of bounds.
at::Tensor class_target_weights(const at::Tensor& t, const std::optional<at::Tensor>& weight,
                                int64_t classes, int64_t ignore_index, at::ScalarType dtype);

// The denominators of reduction='mean' (0-d, accumulation dtype, on the targets' device): the
// summed weights of the non-ignored targets (cross entropy) and their count (z-loss).
struct MeanDenominators {
  at::Tensor total_weight, valid_count;
};
MeanDenominators class_index_denominators(const at::Tensor& t,
                                          const std::optional<at::Tensor>& weight, int64_t classes,
                                          int64_t ignore_index, at::ScalarType acc_dtype);

// The (2) factors of the loss and z-loss terms the row engine folds into the gradient: the
// 1/denominators for a 'mean' that folds them in; for one that does not, 1 and W/n (its backward
// scale is then 1/W, mean_backward_scale); else ones.
at::Tensor row_grad_scales(at::Reduction::Reduction reduction, bool fold,
                           const MeanDenominators& d, const at::TensorOptions& acc_options);

// What backward multiplies grad_output by: 1/W (0 when W is 0: the gradient is 0 there, and
// 0 * inf would be NaN) for a 'mean' not folded into the gradient, else 1; empty for 'none'.
at::Tensor backward_scale(at::Reduction::Reduction reduction, bool fold, const MeanDenominators& d,
                          const at::TensorOptions& acc_options);

// The loss and its z-loss part from the per-row values, in `dtype`: per row (reshaped to
// `shape`), or summed in float64 in row order and divided by the denominators for 'mean'.
struct ReducedLoss {
  at::Tensor loss, z_loss;
};
ReducedLoss reduce_rows(const at::Tensor& row_loss, const at::Tensor& row_z_loss,
                        at::Reduction::Reduction reduction, const MeanDenominators& d,
                        at::IntArrayRef shape, at::ScalarType dtype);

}  // namespace ops
}  // namespace fusedloss
