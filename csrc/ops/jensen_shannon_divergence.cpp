// Operator layer of jensen_shannon_divergence (distillation: student logits `input`, teacher
// logits `target`): schemas, argument and shape checks (once, for every backend, Meta included),
// the rows the engine reads, and the reductions ('mean' over the rows not ignored).
// Autograd: autograd/jensen_shannon_divergence.cpp.

#include "ops/jensen_shannon_divergence.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

#include "cpu/gradient_allocator.h"
#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/row_losses.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;
constexpr c10::string_view kOp = "jensen_shannon_divergence";

// Checks the arguments; returns the reduction.
at::Reduction::Reduction check_problem(const Tensor& input, const Tensor& target,
                                       const OptionalTensor& labels, double beta,
                                       double temperature, c10::string_view reduction) {
  const auto r = parse_reduction(kOp, reduction);
  TORCH_CHECK_VALUE(beta >= 0 && beta <= 1, "fusedloss.", kOp,
                    ": beta must be in [0, 1] (0: forward KL, 1: reverse KL), got ", beta);
  TORCH_CHECK_VALUE(temperature > 0 && std::isfinite(temperature), "fusedloss.", kOp,
                    ": temperature must be positive and finite, got ", temperature);
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", kOp,
              ": input (student logits) and target (teacher logits) must be on one device, got ",
              input.device(), " and ", target.device());
  TORCH_CHECK_NOT_IMPLEMENTED(
      is_supported_dtype(input.scalar_type()) && is_supported_dtype(target.scalar_type()),
      "fusedloss.", kOp, ": input and target must be float32, float64, float16 or bfloat16, got ",
      input.scalar_type(), " and ", target.scalar_type());
  TORCH_CHECK(input.dim() >= 1, "fusedloss.", kOp,
              ": input must hold rows of class logits (at least 1-D), got a 0-d tensor");
  TORCH_CHECK(target.sym_sizes() == input.sym_sizes(), "fusedloss.", kOp,
              ": target (teacher logits) must have input's shape ", input.sym_sizes(), ", got ",
              target.sym_sizes());
  if (labels.has_value()) {
    TORCH_CHECK(labels->scalar_type() == at::kLong, "fusedloss.", kOp,
                ": labels must be int64 (compared with ignore_index), got ",
                labels->scalar_type());
    TORCH_CHECK(labels->device() == input.device(), "fusedloss.", kOp,
                ": labels must be on input's device ", input.device(), ", got ",
                labels->device());
    const auto rows = input.sym_sizes().slice(0, input.dim() - 1);
    TORCH_CHECK(labels->sym_sizes() == rows, "fusedloss.", kOp,
                ": labels must hold one value per row, of shape ", rows, ", got ",
                labels->sym_sizes());
  }
  return r;
}

using JsdEngine = void (*)(const JsdSpec&, const JsdOperands&);

template <JsdEngine engine>
std::tuple<Tensor, Tensor, Tensor> forward_on_device(const Tensor& input, const Tensor& target,
                                                     const OptionalTensor& labels, double beta,
                                                     double temperature, int64_t ignore_index,
                                                     c10::string_view reduction_name,
                                                     bool compute_grad) {
  const auto reduction =
      check_problem(input, target, labels, beta, temperature, reduction_name);
  const auto dtype = input.scalar_type();
  const int64_t C = input.size(-1);
  const auto row_shape = input.sizes().slice(0, input.dim() - 1);
  const int64_t rows = c10::multiply_integers(row_shape);
  JsdOperands o;
  o.student = input.reshape({rows, C}).contiguous();
  o.teacher = target.to(dtype).reshape({rows, C}).contiguous();
  if (labels.has_value()) o.labels = labels->reshape({rows}).contiguous();
  const auto options = o.student.options();
  const auto acc_options = options.dtype(accumulation_dtype(dtype));
  o.row_loss = at::empty({rows}, acc_options);
  // 'mean' over the rows not ignored: a count on the device when labels are given (its 1/n is
  // then applied in backward), else the row count, folded into the gradient.
  const bool counted_mean = reduction == at::Reduction::Mean && labels.has_value();
  if (!counted_mean) o.grad_scale = folded_gradient_scale(reduction, dtype, rows);
  if (compute_grad) o.grad_input = cpu::empty_gradient({rows, C}, options);
  if (rows > 0) engine({beta, temperature, ignore_index}, o);
  Tensor grad = compute_grad ? o.grad_input.view(input.sizes()) : at::empty({0}, options);
  if (!counted_mean) {
    return {reduce_row_losses(o.row_loss, reduction, dtype, row_shape), grad,
            row_backward_scale(reduction, dtype, rows, options.device())};
  }
  const Tensor counted = o.labels.ne(ignore_index).sum(at::kDouble);  // 0: NaN, as torch's mean
  const Tensor loss = o.row_loss.sum(at::kDouble).div(counted).to(dtype);
  return {loss, grad, counted.reciprocal().to(accumulation_dtype(dtype))};
}

std::tuple<Tensor, Tensor, Tensor> forward_meta(const Tensor& input, const Tensor& target,
                                                const OptionalTensor& labels, double beta,
                                                double temperature, int64_t ignore_index,
                                                c10::string_view reduction_name,
                                                bool compute_grad) {
  const auto reduction =
      check_problem(input, target, labels, beta, temperature, reduction_name);
  const auto options = input.options();
  const auto acc_options = options.dtype(accumulation_dtype(input.scalar_type()));
  const bool none = reduction == at::Reduction::None;
  return {none ? at::empty_symint(input.sym_sizes().slice(0, input.dim() - 1), options)
               : at::empty({}, options),
          compute_grad ? at::empty_symint(input.sym_sizes(), options) : at::empty({0}, options),
          none ? at::empty({0}, acc_options) : at::empty({}, acc_options)};
}

Tensor loss_only(const Tensor& input, const Tensor& target, const OptionalTensor& labels,
                 double beta, double temperature, int64_t ignore_index,
                 c10::string_view reduction) {
  return std::get<0>(jensen_shannon_divergence_forward(input, target, labels, beta, temperature,
                                                       ignore_index, reduction, false));
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> jensen_shannon_divergence_forward(
    const Tensor& input, const Tensor& target, const OptionalTensor& labels, double beta,
    double temperature, int64_t ignore_index, c10::string_view reduction, bool compute_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_jensen_shannon_divergence_forward", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(input, target, labels, beta, temperature, ignore_index, reduction,
                     compute_grad);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "jensen_shannon_divergence(Tensor input, Tensor target, Tensor? labels=None, "
      "float beta=0.5, float temperature=1.0, int ignore_index=-100, str reduction=\"mean\") "
      "-> Tensor");
  m.def(
      "_jensen_shannon_divergence_forward(Tensor input, Tensor target, Tensor? labels, "
      "float beta, float temperature, int ignore_index, str reduction, bool compute_grad) -> "
      "(Tensor loss, Tensor grad_input, Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("jensen_shannon_divergence", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_jensen_shannon_divergence_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::jensen_shannon_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_jensen_shannon_divergence_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::jensen_shannon_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_jensen_shannon_divergence_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
