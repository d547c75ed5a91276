// The class problems of cross_entropy and nll_loss; see class_rows.h.

#include "ops/class_rows.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <vector>

#include "ops/arguments.h"

namespace fusedloss {
namespace ops {

void check_class_input(c10::string_view op, const Tensor& input, const Tensor& target) {
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(input.scalar_type()), "fusedloss.", op,
                              ": input must be float32, float64, float16 or bfloat16, got ",
                              input.scalar_type());
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", op,
              ": input and target must be on the same device, got input on ", input.device(),
              " and target on ", target.device());
}

void check_class_weight(c10::string_view op, const std::optional<Tensor>& weight,
                        const Tensor& input, const c10::SymInt& classes) {
  if (!weight.has_value()) return;
  const Tensor& w = *weight;
  TORCH_CHECK(w.dim() == 1 && w.sym_numel() == classes, "fusedloss.", op,
              ": weight must be a 1-D tensor with one value per class (", classes,
              "), got shape ", w.sym_sizes());
  TORCH_CHECK(w.scalar_type() == input.scalar_type(), "fusedloss.", op,
              ": weight must have the input's dtype (", input.scalar_type(), "), got ",
              w.scalar_type());
  TORCH_CHECK(w.device() == input.device(), "fusedloss.", op,
              ": weight must be on the device of input (", input.device(), "), got ", w.device());
}

ClassProblem check_class_problem(c10::string_view op, const Tensor& input, const Tensor& target,
                                 const std::optional<Tensor>& weight, int64_t ignore_index,
                                 bool allow_probabilities) {
  TORCH_CHECK(input.dim() >= 1, "fusedloss.", op,
              ": input must have a class dimension: (C), (N, C) or (N, C, d1, ..., dk); got a "
              "0-d tensor");
  check_class_input(op, input, target);
  ClassProblem p;
  p.class_dim = input.dim() == 1 ? 0 : 1;
  const auto sizes = input.sym_sizes();
  const c10::SymInt& classes = sizes[p.class_dim];
  for (int64_t d = 0; d < input.dim(); ++d) {
    if (d != p.class_dim) p.loss_shape.push_back(sizes[d]);
  }
  if (allow_probabilities && target.sym_sizes() == sizes) {
    p.probability_targets = true;
    TORCH_CHECK(at::isFloatingType(target.scalar_type()), "fusedloss.", op,
                ": a target of the input's shape holds class probabilities and must be floating "
                "point, got ",
                target.scalar_type());
    TORCH_CHECK(is_supported_dtype(target.scalar_type()), "fusedloss.", op,
                ": probability target must be float32, float64, float16 or bfloat16, got ",
                target.scalar_type());
    TORCH_CHECK(ignore_index < 0, "fusedloss.", op,
                ": ignore_index is not supported for probability (floating point) targets, got ",
                ignore_index);
  } else {
    TORCH_CHECK(
        target.scalar_type() == at::kLong || target.scalar_type() == at::kByte, "fusedloss.", op,
        ": class-index target must be int64 (or uint8), as in torch; got ", target.scalar_type(),
        allow_probabilities ? " (a floating target must have the input's shape)" : "");
    if (input.dim() >= 2 && target.dim() >= 1) {
      TORCH_CHECK_VALUE(sizes[0] == target.sym_sizes()[0], "fusedloss.", op,
                        ": expected input batch_size (", sizes[0], ") to match target batch_size (",
                        target.sym_sizes()[0], ")");
    }
    TORCH_CHECK(target.sym_sizes() == c10::SymIntArrayRef(p.loss_shape), "fusedloss.", op,
                ": target of shape ", target.sym_sizes(), " does not match input of shape ", sizes,
                "; expected target shape ", c10::SymIntArrayRef(p.loss_shape),
                " (the input's without the class dimension ", p.class_dim, ")");
  }
  check_class_weight(op, weight, input, classes);
  return p;
}

int64_t row_count(const Tensor& input, int64_t class_dim) {
  int64_t rows = 1;
  for (int64_t d = 0; d < input.dim(); ++d) {
    if (d != class_dim) rows *= input.size(d);
  }
  return rows;
}

// (R, C) contiguous rows of a tensor with the input's layout.
Tensor as_rows(const Tensor& t, int64_t class_dim, int64_t rows, int64_t classes) {
  Tensor v = class_dim == 0 ? t.unsqueeze(0) : t;
  if (v.dim() > 2) v = v.movedim(1, -1);
  return v.reshape({rows, classes}).contiguous();
}

// The inverse of as_rows for a fresh (R, C) tensor: a view with the input's shape.
Tensor from_rows(const Tensor& rows, const Tensor& input, int64_t class_dim) {
  if (class_dim == 0) return rows.view({input.size(0)});
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.erase(shape.begin() + 1);
  shape.push_back(input.size(1));
  return rows.view(shape).movedim(-1, 1);
}

Tensor empty_like_rows(const Tensor& input, const ClassProblem& problem,
                       const at::TensorOptions& options) {
  if (input.dim() <= 2) return at::empty_symint(input.sym_sizes(), options);
  c10::SymDimVector rows_shape(problem.loss_shape);
  rows_shape.push_back(input.sym_size(1));
  return at::empty_symint(rows_shape, options).movedim(-1, 1);
}

}  // namespace ops
}  // namespace fusedloss
