#include "ops/row_losses.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>

#include "ops/arguments.h"

namespace fusedloss {
namespace ops {

double folded_gradient_scale(at::Reduction::Reduction reduction, at::ScalarType dtype,
                             int64_t rows) {
  const bool fold = reduction == at::Reduction::Mean && folds_mean_into_gradient(dtype);
  return fold && rows > 0 ? 1.0 / static_cast<double>(rows) : 1.0;
}

at::Tensor reduce_row_losses(const at::Tensor& row_loss, at::Reduction::Reduction reduction,
                             at::ScalarType dtype, at::IntArrayRef none_shape) {
  if (reduction == at::Reduction::None) return row_loss.to(dtype).view(none_shape);
  at::Tensor total = row_loss.sum(at::kDouble);
  if (reduction == at::Reduction::Mean) total = total.div(static_cast<double>(row_loss.numel()));
  return total.to(dtype);
}

at::Tensor row_backward_scale(at::Reduction::Reduction reduction, at::ScalarType dtype,
                              int64_t rows, at::Device device) {
  const auto options = at::TensorOptions().dtype(accumulation_dtype(dtype)).device(device);
  if (reduction == at::Reduction::None) return at::empty({0}, options);
  const bool unfolded_mean =
      reduction == at::Reduction::Mean && !folds_mean_into_gradient(dtype);
  return at::full({}, unfolded_mean ? 1.0 / static_cast<double>(rows) : 1.0, options);
}

}  // namespace ops
}  // namespace fusedloss
