// Operator layer of nll_loss: schemas, the problem the CPU, CUDA and Meta kernels share (prepare),
// and the layout the engine reads: the input as (outer, C, inner), no transposing copy. Forward
// picks one element per row (engines/row_engines.h); backward writes the gradient in one pass.
// Autograd: autograd/nll_loss.cpp.

#include "ops/nll_loss.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/gradient_allocator.h"
#include "engines/bad_values.h"
#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/class_rows.h"

namespace fusedloss {
namespace ops {
namespace {

constexpr c10::string_view kOp = "nll_loss";

struct NllProblem {
  ClassProblem classes;
  NllSpec spec;
};

NllProblem prepare(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                   int64_t ignore_index, c10::string_view reduction, bool check_target) {
  NllProblem p;
  p.spec.reduction = parse_reduction(kOp, reduction);
  p.classes = check_class_problem(kOp, input, target, weight, ignore_index,
                                  /*allow_probabilities=*/false);
  p.spec.op = static_op_name(kOp);  // the name's one address, which error records hold
  p.spec.ignore_index = ignore_index;
  p.spec.check_target = check_target;
  return p;
}

// Classes and the product of the sizes after the class dimension, of an input's shape.
void set_layout(NllSpec& spec, c10::IntArrayRef sizes) {
  const int64_t class_dim = sizes.size() == 1 ? 0 : 1;
  spec.num_classes = sizes[class_dim];
  spec.inner = 1;
  for (size_t d = class_dim + 1; d < sizes.size(); ++d) spec.inner *= sizes[d];
}

using NllEngine = void (*)(const NllSpec&, const NllOperands&);
using NllBackwardEngine = void (*)(const NllSpec&, const NllBackwardOperands&);

template <NllEngine engine>
std::tuple<Tensor, Tensor> forward_on_device(const Tensor& input, const Tensor& target,
                                             const OptionalTensor& weight, int64_t ignore_index,
                                             c10::string_view reduction, bool check_target) {
  NllProblem p = prepare(input, target, weight, ignore_index, reduction, check_target);
  set_layout(p.spec, input.sizes());
  const bool none = p.spec.reduction == at::Reduction::None;
  NllOperands o;
  o.input = input.contiguous();
  // The engine checks the targets as it reads them: the CPU raises after its pass, CUDA records
  // the first bad one for a deferred error (no synchronization).
  o.target = target.reshape({-1}).to(at::kLong).contiguous();
  if (weight.has_value()) o.weight = weight->contiguous();
  const auto options = input.options();
  o.loss = none ? at::empty({o.target.numel()}, options) : at::empty({}, options);
  // 'none' divides by nothing: an empty total weight, as backward_scale (no reduction kernel).
  const auto acc_options = options.dtype(accumulation_dtype(input.scalar_type()));
  o.total_weight = none ? at::empty({0}, acc_options) : at::empty({}, acc_options);
  engine(p.spec, o);
  const auto shape = C10_AS_INTARRAYREF_SLOW(p.classes.loss_shape);
  return {none ? o.loss.view(shape) : o.loss, o.total_weight};
}

std::tuple<Tensor, Tensor> forward_meta(const Tensor& input, const Tensor& target,
                                        const OptionalTensor& weight, int64_t ignore_index,
                                        c10::string_view reduction, bool check_target) {
  const NllProblem p = prepare(input, target, weight, ignore_index, reduction, check_target);
  const auto options = input.options();
  const bool none = p.spec.reduction == at::Reduction::None;
  const auto acc_options = options.dtype(accumulation_dtype(input.scalar_type()));
  if (none) return {at::empty_symint(p.classes.loss_shape, options), at::empty({0}, acc_options)};
  return {at::empty({}, options), at::empty({}, acc_options)};
}

// The checks of backward's own arguments (the forward checked the rest): everything the kernel
// indexes with must fit the gradient it writes.
void check_backward(const Tensor& grad_output, const Tensor& target, const OptionalTensor& weight,
                    const Tensor& total_weight, c10::SymIntArrayRef input_size,
                    at::Reduction::Reduction reduction) {
  TORCH_CHECK(is_supported_dtype(grad_output.scalar_type()),
              "fusedloss._nll_loss_backward: grad_output must be a floating dtype, got ",
              grad_output.scalar_type());
  TORCH_CHECK(grad_output.device() == target.device() && total_weight.device() == target.device() &&
                  (!weight.has_value() || weight->device() == target.device()),
              "fusedloss._nll_loss_backward: grad_output, target, weight and total_weight must "
              "be on one device");
  TORCH_CHECK(!input_size.empty(), "fusedloss._nll_loss_backward: input_size must not be empty");
  const size_t class_dim = input_size.size() == 1 ? 0 : 1;
  c10::SymInt rows = 1;
  for (size_t d = 0; d < input_size.size(); ++d) {
    if (d != class_dim) rows *= input_size[d];
  }
  TORCH_CHECK(target.sym_numel() == rows, "fusedloss._nll_loss_backward: input_size ", input_size,
              " has ", rows, " rows, target has ", target.sym_numel(), " elements");
  TORCH_CHECK(!weight.has_value() || weight->sym_numel() == input_size[class_dim],
              "fusedloss._nll_loss_backward: weight must hold one value per class (",
              input_size[class_dim], "), got shape ",
              weight.has_value() ? weight->sym_sizes() : c10::SymIntArrayRef{});
  TORCH_CHECK(reduction == at::Reduction::None || total_weight.sym_numel() == 1,
              "fusedloss._nll_loss_backward: a reduced loss needs a 0-d total_weight, got shape ",
              total_weight.sym_sizes());
  if (reduction == at::Reduction::None) {
    TORCH_CHECK(grad_output.sym_numel() == target.sym_numel(),
                "fusedloss._nll_loss_backward: reduction='none' needs one grad_output per target, "
                "got ",
                grad_output.sym_numel(), " for ", target.sym_numel());
  } else {
    TORCH_CHECK(grad_output.sym_numel() == 1,
                "fusedloss._nll_loss_backward: a reduced loss has one grad_output, got shape ",
                grad_output.sym_sizes());
  }
}

template <NllBackwardEngine engine>
Tensor backward_on_device(const Tensor& grad_output, const Tensor& target,
                          const OptionalTensor& weight, const Tensor& total_weight,
                          c10::IntArrayRef input_size, int64_t ignore_index,
                          c10::string_view reduction) {
  NllSpec spec;
  spec.reduction = parse_reduction(kOp, reduction);
  spec.ignore_index = ignore_index;
  check_backward(grad_output, target, weight, total_weight, c10::fromIntArrayRefSlow(input_size),
                 spec.reduction);
  set_layout(spec, input_size);
  const at::ScalarType dtype = grad_output.scalar_type();
  NllBackwardOperands o;
  // A broadcast grad_output (the backward of loss.sum()) is read as one value, not copied.
  const bool broadcast = grad_output.numel() > 1 && [&] {
    for (const int64_t st : grad_output.strides()) {
      if (st != 0) return false;
    }
    return true;
  }();
  o.grad_output = broadcast ? grad_output : grad_output.contiguous();
  o.grad_output_stride = broadcast ? 0 : 1;
  o.target = target.reshape({-1}).to(at::kLong).contiguous();
  if (weight.has_value()) o.weight = weight->to(dtype).contiguous();
  o.total_weight = total_weight.to(accumulation_dtype(dtype));
  o.grad_input = cpu::empty_gradient(input_size, grad_output.options());
  engine(spec, o);
  return o.grad_input;
}

Tensor backward_meta(const Tensor& grad_output, const Tensor& target, const OptionalTensor& weight,
                     const Tensor& total_weight, c10::SymIntArrayRef input_size,
                     int64_t ignore_index, c10::string_view reduction) {
  check_backward(grad_output, target, weight, total_weight, input_size,
                 parse_reduction(kOp, reduction));
  return at::empty_symint(input_size, grad_output.options());
}

// The public op below autograd: the loss alone.
Tensor loss_only(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                 int64_t ignore_index, c10::string_view reduction, bool check_target) {
  return std::get<0>(
      nll_loss_forward(input, target, weight, ignore_index, reduction, check_target));
}

}  // namespace

std::tuple<Tensor, Tensor> nll_loss_forward(const Tensor& input, const Tensor& target,
                                            const OptionalTensor& weight, int64_t ignore_index,
                                            c10::string_view reduction, bool check_target) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_nll_loss_forward", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(input, target, weight, ignore_index, reduction, check_target);
}

Tensor nll_loss_backward(const Tensor& grad_output, const Tensor& target,
                         const OptionalTensor& weight, const Tensor& total_weight,
                         c10::SymIntArrayRef input_size, int64_t ignore_index,
                         c10::string_view reduction) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_nll_loss_backward", "")
                           .typed<decltype(backward_meta)>();
  return handle.call(grad_output, target, weight, total_weight, input_size, ignore_index,
                     reduction);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "nll_loss(Tensor input, Tensor target, Tensor? weight=None, int ignore_index=-100, "
      "str reduction=\"mean\", *, bool check_target=True) -> Tensor");
  m.def(
      "_nll_loss_forward(Tensor input, Tensor target, Tensor? weight, int ignore_index, "
      "str reduction, bool check_target) -> (Tensor loss, Tensor total_weight)");
  m.def(
      "_nll_loss_backward(Tensor grad_output, Tensor target, Tensor? weight, Tensor total_weight, "
      "SymInt[] input_size, int ignore_index, str reduction) -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("nll_loss", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_nll_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::nll_loss_kernel>));
  m.impl("_nll_loss_backward",
         TORCH_FN(fusedloss::ops::backward_on_device<fusedloss::cpu::nll_loss_backward_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_nll_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::nll_loss_kernel>));
  m.impl("_nll_loss_backward",
         TORCH_FN(fusedloss::ops::backward_on_device<fusedloss::cuda::nll_loss_backward_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_nll_loss_forward", TORCH_FN(fusedloss::ops::forward_meta));
  m.impl("_nll_loss_backward", TORCH_FN(fusedloss::ops::backward_meta));
}
