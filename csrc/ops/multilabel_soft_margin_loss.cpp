// multilabel_soft_margin_loss: the mean over classes of binary cross entropy with logits, per
// sample. It is that loss's fused kernel (one pass, gradient written in the forward) with a
// weight; what remains is a division by C, or for reduction='none' a sum over the classes.
// A composite op: autograd differentiates it through binary_cross_entropy_with_logits's own
// backward, so it needs no kernels of its own.

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>

#include "ops/arguments.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

Tensor bce_with_logits(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                       c10::string_view reduction) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::binary_cross_entropy_with_logits", "")
                           .typed<Tensor(const Tensor&, const Tensor&, const OptionalTensor&,
                                         const OptionalTensor&, c10::string_view)>();
  return handle.call(input, target, weight, std::nullopt, reduction);
}

Tensor multilabel_soft_margin_loss(const Tensor& input, const Tensor& target,
                                   const OptionalTensor& weight, c10::string_view reduction_name) {
  constexpr c10::string_view kOp = "multilabel_soft_margin_loss";
  const auto reduction = parse_reduction(kOp, reduction_name);
  // The checks binary_cross_entropy_with_logits makes, so that errors name this op.
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", kOp,
              ": input and target must be on the same device, got input on ", input.device(),
              " and target on ", target.device());
  const auto dtype = c10::promoteTypes(input.scalar_type(), target.scalar_type());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(dtype), "fusedloss.", kOp,
                              ": input and target must promote to float32, float64, float16 or "
                              "bfloat16, got input ",
                              input.scalar_type(), " and target ", target.scalar_type());
  TORCH_CHECK_INDEX(input.dim() >= 1, "fusedloss.", kOp,
                    ": input must have a class dimension, (C) or (N, C), got a 0-d tensor");
  // Broadcasting as torch's formula does (views: autograd sums the gradient back), and its
  // division by the input's class count.
  Tensor x = input, t = target;
  if (input.sym_sizes() != target.sym_sizes()) {
    const auto shape =
        broadcast_shape(kOp, "input and target", input.sym_sizes(), target.sym_sizes());
    x = input.expand_symint(shape);
    t = target.expand_symint(shape);
  }
  const c10::SymInt classes = input.sym_size(-1);
  if (reduction == at::Reduction::None) {
    return bce_with_logits(x, t, weight, "none").sum(-1).div(classes);
  }
  if (reduction == at::Reduction::Sum) return bce_with_logits(x, t, weight, "sum").div(classes);
  // The mean over samples of the mean over classes: the mean over all elements, which the fused
  // kernel folds into the gradient.
  if (x.sym_size(-1) == classes) return bce_with_logits(x, t, weight, "mean");
  return bce_with_logits(x, t, weight, "sum").div(classes * (x.sym_numel() / x.sym_size(-1)));
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "multilabel_soft_margin_loss(Tensor input, Tensor target, Tensor? weight=None, "
      "str reduction=\"mean\") -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeImplicitAutograd, m) {
  m.impl("multilabel_soft_margin_loss", TORCH_FN(fusedloss::ops::multilabel_soft_margin_loss));
}
