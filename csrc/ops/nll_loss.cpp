// Operator layer of nll_loss: a gather of the given log-probabilities, written with ATen ops
// after our own target check; autograd differentiates it (its gradient is one scatter, and its
// second derivative is exact).

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "ops/arguments.h"
#include "ops/class_rows.h"
#include "ops/cross_entropy_common.h"

namespace fusedloss {
namespace ops {
namespace {

using OptionalTensor = std::optional<Tensor>;

std::tuple<Tensor, Tensor> class_targets_on_device(const Tensor& target,
                                                   const OptionalTensor& weight,
                                                   int64_t num_classes, int64_t ignore_index,
                                                   bool check_target, c10::string_view op,
                                                   at::ScalarType dtype) {
  const Tensor t = checked_class_targets(op, target, num_classes, ignore_index, check_target);
  const Tensor row_weight = class_target_weights(t, weight, num_classes, ignore_index, dtype);
  const Tensor safe = num_classes > 0 ? t.clamp(0, num_classes - 1) : t.clamp(0, 0);
  return {row_weight.view(target.sizes()), safe.view(target.sizes())};
}

std::tuple<Tensor, Tensor> class_targets_meta(const Tensor& target, const OptionalTensor& weight,
                                              int64_t num_classes, int64_t ignore_index,
                                              bool check_target, c10::string_view op,
                                              at::ScalarType dtype) {
  return {at::empty_symint(target.sym_sizes(), target.options().dtype(dtype)),
          at::empty_symint(target.sym_sizes(), target.options().dtype(at::kLong))};
}

Tensor nll_loss(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                int64_t ignore_index, c10::string_view reduction_name, bool check_target) {
  const auto reduction = parse_reduction("nll_loss", reduction_name);
  const ClassProblem problem = check_class_problem("nll_loss", input, target, weight, ignore_index,
                                                   /*allow_probabilities=*/false);
  static auto class_targets = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("fusedloss::_class_target_weights", "")
                                  .typed<decltype(class_targets_on_device)>();
  const auto [row_weight, safe_target] = class_targets.call(
      target, weight, input.sym_size(problem.class_dim).guard_int(__FILE__, __LINE__), ignore_index,
      check_target, "nll_loss", input.scalar_type());
  const Tensor picked = problem.class_dim == 0
                            ? input.gather(0, safe_target.unsqueeze(0)).squeeze(0)
                            : input.gather(1, safe_target.unsqueeze(1)).squeeze(1);
  // Ignored rows give 0 even where the input is not finite (0 * inf would be NaN).
  const Tensor loss =
      at::where(row_weight.eq(0), at::zeros({}, input.options()), picked.neg().mul(row_weight));
  if (reduction == at::Reduction::None) return loss;
  if (reduction == at::Reduction::Sum) return loss.sum();
  return loss.sum().div(row_weight.sum());  // 0 / 0 = NaN when every target is ignored, as torch
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "nll_loss(Tensor input, Tensor target, Tensor? weight=None, int ignore_index=-100, "
      "str reduction=\"mean\", *, bool check_target=True) -> Tensor");
  m.def(
      "_class_target_weights(Tensor target, Tensor? weight, int num_classes, int ignore_index, "
      "bool check_target, str op, ScalarType dtype) -> (Tensor row_weight, Tensor safe_target)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeImplicitAutograd, m) {
  m.impl("nll_loss", TORCH_FN(fusedloss::ops::nll_loss));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_class_target_weights", TORCH_FN(fusedloss::ops::class_targets_on_device));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_class_target_weights", TORCH_FN(fusedloss::ops::class_targets_on_device));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_class_target_weights", TORCH_FN(fusedloss::ops::class_targets_meta));
}
