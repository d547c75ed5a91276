#pragma once
// The reduction of per-row losses, shared by the ops whose engine writes one loss per row (in the
// accumulation dtype) and folds 'mean' into the gradients it saves: cosine embedding, triplet
// margin, multilabel margin.

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>

namespace fusedloss {
namespace ops {

// The gradient scale the engine folds in: 1 / rows for a 'mean' whose 1/n may go into the
// gradient (folds_mean_into_gradient), else 1.
double folded_gradient_scale(at::Reduction::Reduction reduction, at::ScalarType dtype,
                             int64_t rows);

// The loss in `dtype`: the row losses viewed as `none_shape` for 'none', else their sum in
// float64, over rows for 'mean' (NaN for no rows, as torch).
at::Tensor reduce_row_losses(const at::Tensor& row_loss, at::Reduction::Reduction reduction,
                             at::ScalarType dtype, at::IntArrayRef none_shape);

// What backward multiplies the saved gradients by, besides grad_output: empty for 'none', else
// 0-d in the accumulation dtype: the 1/rows of a 'mean' not folded in, else 1.
at::Tensor row_backward_scale(at::Reduction::Reduction reduction, at::ScalarType dtype,
                              int64_t rows, at::Device device);

}  // namespace ops
}  // namespace fusedloss
