// Operator layer of multi_margin_loss (the multi-class hinge): schema, argument checks, the
// target check, and the reduction of the per-row losses the row engine writes.

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <cmath>

#include "cpu/gradient_allocator.h"
#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/class_rows.h"
#include "ops/multiclass_losses.h"

namespace fusedloss {
namespace ops {
namespace {

// Checks the arguments; returns the number of rows (N, or 1 for an input (C) or a 0-d input,
// which torch takes as one row of one class).
c10::SymInt check_margin_problem(const Tensor& input, const Tensor& target, int64_t p,
                                 double margin, const OptionalTensor& weight) {
  constexpr const char* op = "multi_margin_loss";
  TORCH_CHECK_VALUE(p == 1 || p == 2, "fusedloss.", op,
                    ": only p == 1 and p == 2 are supported, got ", p);
  TORCH_CHECK_VALUE(!std::isnan(margin), "fusedloss.", op, ": margin is NaN");
  TORCH_CHECK(
      input.dim() == 0 || ((input.dim() == 1 || input.dim() == 2) && input.sym_size(-1) != 0),
      "fusedloss.", op,
      ": expected input (C) or (N, C) with C > 0 (N may be 0), or 0-d, got shape ",
      input.sym_sizes());
  check_class_input(op, input, target);
  TORCH_CHECK(target.scalar_type() == at::kLong, "fusedloss.", op,
              ": target must be int64 class indices, got ", target.scalar_type());
  const c10::SymInt rows = input.dim() <= 1 ? c10::SymInt(1) : input.sym_size(0);
  const c10::SymInt classes = input.dim() == 0 ? c10::SymInt(1) : input.sym_size(-1);
  TORCH_CHECK(target.dim() <= 1 && target.sym_numel() == rows, "fusedloss.", op,
              ": target must hold one class per row of input (", rows, "), got shape ",
              target.sym_sizes());
  check_class_weight(op, weight, input, classes);
  return rows;
}

using MultiMarginEngine = void (*)(const MultiMarginSpec&, const MultiMarginOperands&);

// Returns (loss, grad_input, backward_scale): the gradient holds the 1/N of 'mean' where
// folds_mean_into_gradient, else backward_scale does.
template <MultiMarginEngine engine>
std::tuple<Tensor, Tensor, Tensor> multi_margin_on_device(const Tensor& input, const Tensor& target,
                                                          const OptionalTensor& weight, int64_t p,
                                                          double margin,
                                                          c10::string_view reduction_name,
                                                          bool compute_grad) {
  const auto reduction = parse_reduction("multi_margin_loss", reduction_name);
  check_margin_problem(input, target, p, margin, weight);
  const int64_t rows = input.dim() <= 1 ? 1 : input.size(0);
  const int64_t classes = input.dim() == 0 ? 1 : input.size(-1);
  MultiMarginOperands o;
  o.input = input.reshape({rows, classes}).contiguous();
  // The target is always checked, as torch's CPU kernel does (its CUDA kernel asserts on the
  // device): here at once on the CPU, by the kernel (a deferred error, NaN rows) on CUDA.
  o.target = target.reshape({-1}).contiguous();
  if (o.target.is_cpu()) {
    const Tensor bad = o.target.lt(0).logical_or_(o.target.ge(classes));
    if (bad.any().item<bool>()) {
      const int64_t at = first_true_position(bad);
      TORCH_CHECK(false, "fusedloss.multi_margin_loss: target ", o.target[at].item<int64_t>(),
                  " is out of range: expected a class in [0, ", classes, "); found at position ",
                  at);
    }
  }
  if (weight.has_value()) o.weight = weight->contiguous();
  const auto acc_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  o.row_loss = at::empty({rows}, acc_options);
  if (compute_grad) o.grad_input = cpu::empty_gradient({rows, classes}, input.options());
  const bool mean = reduction == at::Reduction::Mean && rows > 0;
  const bool fold = folds_mean_into_gradient(input.scalar_type());
  if (mean && fold) o.grad_scale = 1.0 / static_cast<double>(rows);
  if (rows > 0) engine({p, margin}, o);
  Tensor loss;
  if (reduction == at::Reduction::None) {
    loss = o.row_loss.to(input.scalar_type()).view(target.sizes());
  } else {
    Tensor total = o.row_loss.sum(at::kDouble);
    // An empty batch gives 0 (torch's CPU kernel returns uninitialized memory there).
    if (mean) total = total.div(static_cast<double>(rows));
    loss = total.to(input.scalar_type());
  }
  const Tensor scale =
      reduction == at::Reduction::None
          ? at::empty({0}, acc_options)
          : at::full({}, mean && !fold ? 1.0 / static_cast<double>(rows) : 1.0, acc_options);
  return {loss, compute_grad ? o.grad_input.view(input.sizes()) : at::empty({0}, input.options()),
          scale};
}

std::tuple<Tensor, Tensor, Tensor> multi_margin_meta(const Tensor& input, const Tensor& target,
                                                     const OptionalTensor& weight, int64_t p,
                                                     double margin, c10::string_view reduction_name,
                                                     bool compute_grad) {
  const auto reduction = parse_reduction("multi_margin_loss", reduction_name);
  check_margin_problem(input, target, p, margin, weight);
  return {reduction == at::Reduction::None ? at::empty_symint(target.sym_sizes(), input.options())
                                           : at::empty({}, input.options()),
          compute_grad ? at::empty_symint(input.sym_sizes(), input.options())
                       : at::empty({0}, input.options()),
          at::empty(reduction == at::Reduction::None ? at::IntArrayRef{0} : at::IntArrayRef{},
                    input.options().dtype(accumulation_dtype(input.scalar_type())))};
}

Tensor loss_only(const Tensor& input, const Tensor& target, int64_t p, double margin,
                 const OptionalTensor& weight, c10::string_view reduction) {
  return std::get<0>(multi_margin_loss_forward(input, target, p, margin, weight, reduction, false));
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> multi_margin_loss_forward(
    const Tensor& input, const Tensor& target, int64_t p, double margin,
    const OptionalTensor& weight, c10::string_view reduction, bool compute_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_multi_margin_loss_forward", "")
                           .typed<decltype(multi_margin_meta)>();
  return handle.call(input, target, weight, p, margin, reduction, compute_grad);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "multi_margin_loss(Tensor input, Tensor target, int p=1, float margin=1.0, "
      "Tensor? weight=None, str reduction=\"mean\") -> Tensor");
  m.def(
      "_multi_margin_loss_forward(Tensor input, Tensor target, Tensor? weight, int p, "
      "float margin, str reduction, bool compute_grad) "
      "-> (Tensor loss, Tensor grad_input, Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("multi_margin_loss", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_multi_margin_loss_forward",
         TORCH_FN(fusedloss::ops::multi_margin_on_device<fusedloss::cpu::multi_margin_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_multi_margin_loss_forward",
         TORCH_FN(fusedloss::ops::multi_margin_on_device<fusedloss::cuda::multi_margin_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_multi_margin_loss_forward", TORCH_FN(fusedloss::ops::multi_margin_meta));
}
