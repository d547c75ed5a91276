#pragma once
// The class problems of cross_entropy and nll_loss at the operator layer: what input and target
// describe (checked once, for every backend, Meta included), and the layout of R rows of C
// contiguous logits the row engines work on.
//
// Layout: input (C), (N, C) or (N, C, d1, ..., dk) becomes R rows of C contiguous logits (for
// k > 0 that is one transposing copy), and the gradient the engine writes in that layout is
// handed back as a strided view with the input's shape.

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/string_view.h>

#include <optional>

namespace fusedloss {
namespace ops {

using at::Tensor;

struct ClassProblem {
  int64_t class_dim = 0;  // 0 for an input (C), else 1
  bool probability_targets = false;
  c10::SymDimVector loss_shape;  // of reduction='none': the input's without the class dimension
};

// The checks every multi-class op makes: input of a supported dtype, on target's device; a class
// weight of one value per class, of input's dtype and device.
void check_class_input(c10::string_view op, const Tensor& input, const Tensor& target);
void check_class_weight(c10::string_view op, const std::optional<Tensor>& weight,
                        const Tensor& input, const c10::SymInt& classes);

// Checks shapes, dtypes and devices of input, target and the class weights.
ClassProblem check_class_problem(c10::string_view op, const Tensor& input, const Tensor& target,
                                 const std::optional<Tensor>& weight, int64_t ignore_index,
                                 bool allow_probabilities);

// The number of rows: the product of the input's sizes without the class dimension.
int64_t row_count(const Tensor& input, int64_t class_dim);

// (R, C) contiguous rows of a tensor with the input's layout.
Tensor as_rows(const Tensor& t, int64_t class_dim, int64_t rows, int64_t classes);

// The inverse of as_rows for a fresh (R, C) tensor: a view with the input's shape.
Tensor from_rows(const Tensor& rows, const Tensor& input, int64_t class_dim);

// The strides from_rows gives, for Meta kernels: an empty tensor of the input's shape laid out as
// rows of classes.
Tensor empty_like_rows(const Tensor& input, const ClassProblem& problem,
                       const at::TensorOptions& options);

}  // namespace ops
}  // namespace fusedloss
