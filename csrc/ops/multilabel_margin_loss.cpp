// Operator layer of multilabel_margin_loss: schemas, torch's shape rules (checked once, for every
// backend, Meta included), the target check on the CPU, and the reduction of the engine's per-row
// losses. Autograd: autograd/multilabel_margin_loss.cpp.

#include "ops/multilabel_margin_loss.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/gradient_allocator.h"
#include "engines/bad_values.h"
#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/row_losses.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
constexpr c10::string_view kOp = "multilabel_margin_loss";

// torch's rules: (C) or (N, C) scores with a target of the same shape (a 1-D one may be 0-d for
// a 0-d input); C > 0. Returns the number of classes.
c10::SymInt check_problem(const Tensor& input, const Tensor& target) {
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", kOp,
              ": input and target must be on one device, got ", input.device(), " and ",
              target.device());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(input.scalar_type()), "fusedloss.", kOp,
                              ": input must be float32, float64, float16 or bfloat16, got ",
                              input.scalar_type());
  TORCH_CHECK(target.scalar_type() == at::kLong, "fusedloss.", kOp,
              ": target must hold int64 class indices, got ", target.scalar_type());
  const int64_t dim = input.dim();
  TORCH_CHECK(dim == 0 || (dim <= 2 && input.sym_size(-1) != 0), "fusedloss.", kOp,
              ": Expected non-empty vector or matrix with optional 0-dim batch size, but got: ",
              input.sym_sizes());
  const c10::SymInt classes = dim == 0 ? c10::SymInt(1) : input.sym_size(-1);
  const bool fits = dim == 2 ? target.sym_sizes() == input.sym_sizes()
                             : target.dim() <= 1 && target.sym_numel() == classes;
  TORCH_CHECK(fits, "fusedloss.", kOp, ": inconsistent target size: ", target.sym_sizes(),
              " for input of size: ", input.sym_sizes());
  return classes;
}

// The CPU raises at once, as torch: every entry must be a class in [0, C) or -1.
void check_cpu_target(const Tensor& target, int64_t classes) {
  const Tensor bad = target.lt(-1).logical_or_(target.ge(classes));
  if (!bad.any().item<bool>()) return;
  BadValueRecord record = empty_bad_value_record();
  record.kind = static_cast<int32_t>(BadValueKind::MultilabelClassIndex);
  record.op = reinterpret_cast<unsigned long long>(static_op_name(kOp));
  record.position = first_true_position(bad);
  record.value = target.reshape({-1})[record.position].item<int64_t>();
  record.limit = classes;
  raise_bad_value(record);
}

using MultilabelEngine = void (*)(const MultilabelMarginOperands&);

template <MultilabelEngine engine>
std::tuple<Tensor, Tensor, Tensor> forward_on_device(const Tensor& input, const Tensor& target,
                                                     c10::string_view reduction_name,
                                                     bool compute_grad) {
  const auto reduction = parse_reduction(kOp, reduction_name);
  const int64_t C = check_problem(input, target).expect_int();
  const int64_t rows = input.dim() == 2 ? input.size(0) : 1;
  MultilabelMarginOperands o;
  o.input = input.reshape({rows, C}).contiguous();
  o.target = target.reshape({rows, C}).contiguous();
  if (o.target.is_cpu()) check_cpu_target(o.target, C);
  if (o.input.is_cuda()) o.label_counts = at::empty({rows, C}, o.target.options().dtype(at::kInt));
  const auto options = o.input.options();
  o.row_loss = at::empty({rows}, options.dtype(accumulation_dtype(input.scalar_type())));
  o.grad_scale = folded_gradient_scale(reduction, input.scalar_type(), rows);
  if (compute_grad) o.grad_input = cpu::empty_gradient({rows, C}, options);
  if (rows > 0) engine(o);
  const Tensor loss =
      reduce_row_losses(o.row_loss, reduction, input.scalar_type(),
                        input.dim() == 2 ? at::IntArrayRef{rows} : at::IntArrayRef{});
  return {loss, compute_grad ? o.grad_input.view(input.sizes()) : at::empty({0}, options),
          row_backward_scale(reduction, input.scalar_type(), rows, options.device())};
}

std::tuple<Tensor, Tensor, Tensor> forward_meta(const Tensor& input, const Tensor& target,
                                                c10::string_view reduction_name,
                                                bool compute_grad) {
  const auto reduction = parse_reduction(kOp, reduction_name);
  check_problem(input, target);
  const auto options = input.options();
  const auto acc_options = options.dtype(accumulation_dtype(input.scalar_type()));
  const bool none = reduction == at::Reduction::None;
  Tensor loss = at::empty({}, options);
  if (none && input.dim() == 2) loss = at::empty_symint({input.sym_size(0)}, options);
  return {loss,
          compute_grad ? at::empty_symint(input.sym_sizes(), options) : at::empty({0}, options),
          none ? at::empty({0}, acc_options) : at::empty({}, acc_options)};
}

Tensor loss_only(const Tensor& input, const Tensor& target, c10::string_view reduction) {
  return std::get<0>(multilabel_margin_loss_forward(input, target, reduction, false));
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> multilabel_margin_loss_forward(const Tensor& input,
                                                                  const Tensor& target,
                                                                  c10::string_view reduction,
                                                                  bool compute_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_multilabel_margin_loss_forward", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(input, target, reduction, compute_grad);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def("multilabel_margin_loss(Tensor input, Tensor target, str reduction=\"mean\") -> Tensor");
  m.def(
      "_multilabel_margin_loss_forward(Tensor input, Tensor target, str reduction, "
      "bool compute_grad) -> (Tensor loss, Tensor grad_input, Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("multilabel_margin_loss", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_multilabel_margin_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::multilabel_margin_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_multilabel_margin_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::multilabel_margin_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_multilabel_margin_loss_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
