// Operator layer of cross_entropy and cross_entropy_with_z_loss: schemas, the problem description
// that the CPU, CUDA and Meta kernels share (prepare), and the layout of the rows. The row engine
// (engines/row_engines.h) does the rest: target check, denominators, rows, reduction.

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "cpu/gradient_allocator.h"
#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/class_rows.h"
#include "ops/cross_entropy_common.h"
#include "ops/multiclass_losses.h"

namespace fusedloss {
namespace ops {
namespace {

constexpr c10::string_view kOp = "cross_entropy";

struct CrossEntropyProblem {
  ClassProblem classes;
  CrossEntropySpec spec;
  at::ScalarType dtype;  // of the computation: the input's, promoted with probability targets'
};

CrossEntropyProblem prepare(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                            int64_t ignore_index, c10::string_view reduction,
                            double label_smoothing, double z_loss, std::optional<double> softcap,
                            bool check_target, bool compute_grad, bool compute_target_grad) {
  CrossEntropyProblem p;
  p.spec.reduction = parse_reduction(kOp, reduction);
  check_cross_entropy_options(kOp, label_smoothing, z_loss, softcap);
  p.classes = check_class_problem(kOp, input, target, weight, ignore_index,
                                  /*allow_probabilities=*/true);
  TORCH_CHECK(!compute_target_grad || (p.classes.probability_targets && compute_grad),
              "fusedloss._cross_entropy_forward: a target gradient exists only for probability "
              "targets, and is computed with the input gradient");
  p.dtype = p.classes.probability_targets
                ? c10::promoteTypes(input.scalar_type(), target.scalar_type())
                : input.scalar_type();
  p.spec.ignore_index = ignore_index;
  p.spec.label_smoothing = label_smoothing;
  p.spec.z_loss = z_loss;
  p.spec.softcap = softcap.value_or(0);
  p.spec.probability_targets = p.classes.probability_targets;
  p.spec.check_target = check_target;
  p.spec.fold_mean = folds_mean_into_gradient(p.dtype);
  return p;
}

using CrossEntropyEngine = void (*)(const CrossEntropySpec&, const CrossEntropyOperands&);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> outputs(const CrossEntropyProblem& p,
                                                          const Tensor& input, Tensor loss,
                                                          Tensor z_loss, Tensor grad_input,
                                                          Tensor grad_target, Tensor scale) {
  const auto options = input.options().dtype(p.dtype);
  const auto empty = [&] { return at::empty({0}, options); };
  return {loss, z_loss, grad_input.defined() ? grad_input : empty(),
          grad_target.defined() ? grad_target : empty(), scale};
}

template <CrossEntropyEngine engine>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_on_device(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight, int64_t ignore_index,
    c10::string_view reduction, double label_smoothing, double z_loss,
    std::optional<double> softcap, bool check_target, bool compute_grad,
    bool compute_target_grad) {
  CrossEntropyProblem p =
      prepare(input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
              check_target, compute_grad, compute_target_grad);
  const int64_t class_dim = p.classes.class_dim, C = input.size(class_dim);
  const int64_t rows = row_count(input, class_dim);
  p.spec.num_classes = C;
  const auto options = input.options().dtype(p.dtype);
  const bool none = p.spec.reduction == at::Reduction::None;

  CrossEntropyOperands o;
  o.logits = as_rows(input.to(p.dtype), class_dim, rows, C);
  // contiguous: the engines index row r at offset r (a strided or expanded target would not be).
  o.target = p.classes.probability_targets ? as_rows(target.to(p.dtype), class_dim, rows, C)
                                           : target.reshape({-1}).to(at::kLong).contiguous();
  if (weight.has_value()) o.weight = weight->to(p.dtype).contiguous();
  o.loss = none ? at::empty({rows}, options) : at::empty({}, options);
  o.z_loss = at::empty_like(o.loss);
  o.backward_scale = none ? at::empty({0}, options.dtype(accumulation_dtype(p.dtype)))
                          : at::empty({}, options.dtype(accumulation_dtype(p.dtype)));
  if (compute_grad) o.grad_input = cpu::empty_gradient({rows, C}, options);
  if (compute_target_grad) o.grad_target = cpu::empty_gradient({rows, C}, options);
  engine(p.spec, o);

  const auto shape = C10_AS_INTARRAYREF_SLOW(p.classes.loss_shape);
  return outputs(p, input, none ? o.loss.view(shape) : o.loss,
                 none ? o.z_loss.view(shape) : o.z_loss,
                 compute_grad ? from_rows(o.grad_input, input, class_dim) : Tensor(),
                 compute_target_grad ? from_rows(o.grad_target, input, class_dim) : Tensor(),
                 o.backward_scale);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_meta(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight, int64_t ignore_index,
    c10::string_view reduction, double label_smoothing, double z_loss,
    std::optional<double> softcap, bool check_target, bool compute_grad,
    bool compute_target_grad) {
  const CrossEntropyProblem p =
      prepare(input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
              check_target, compute_grad, compute_target_grad);
  const auto options = input.options().dtype(p.dtype);
  const bool none = p.spec.reduction == at::Reduction::None;
  const auto loss = [&] {
    return none ? at::empty_symint(p.classes.loss_shape, options) : at::empty({}, options);
  };
  const auto acc_options = options.dtype(accumulation_dtype(p.dtype));
  return outputs(p, input, loss(), loss(),
                 compute_grad ? empty_like_rows(input, p.classes, options) : Tensor(),
                 compute_target_grad ? empty_like_rows(input, p.classes, options) : Tensor(),
                 none ? at::empty({0}, acc_options) : at::empty({}, acc_options));
}

// The public ops below autograd: the loss alone.
std::tuple<Tensor, Tensor> loss_only(const Tensor& input, const Tensor& target,
                                     const OptionalTensor& weight, const CrossEntropyArgs& args) {
  auto r = cross_entropy_forward(input, target, weight, args, false, false);
  return {r.loss, r.z_loss};
}

}  // namespace

CrossEntropyResult cross_entropy_forward(const Tensor& input, const Tensor& target,
                                         const OptionalTensor& weight, const CrossEntropyArgs& args,
                                         bool compute_grad, bool compute_target_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_cross_entropy_forward", "")
                           .typed<decltype(forward_meta)>();
  auto [loss, z, grad_input, grad_target, scale] =
      handle.call(input, target, weight, args.ignore_index, args.reduction, args.label_smoothing,
                  args.z_loss, args.softcap, args.check_target, compute_grad, compute_target_grad);
  return {loss, z, grad_input, grad_target, scale};
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "cross_entropy(Tensor input, Tensor target, Tensor? weight=None, int ignore_index=-100, "
      "str reduction=\"mean\", float label_smoothing=0.0, *, float z_loss=0.0, "
      "float? softcap=None, bool check_target=True) -> Tensor");
  m.def(
      "cross_entropy_with_z_loss(Tensor input, Tensor target, Tensor? weight=None, "
      "int ignore_index=-100, str reduction=\"mean\", float label_smoothing=0.0, *, "
      "float z_loss=0.0, float? softcap=None, bool check_target=True) "
      "-> (Tensor loss, Tensor z_loss)");
  m.def(
      "_cross_entropy_forward(Tensor input, Tensor target, Tensor? weight, int ignore_index, "
      "str reduction, float label_smoothing, float z_loss, float? softcap, bool check_target, "
      "bool compute_grad, bool compute_target_grad) -> (Tensor loss, Tensor z_loss, "
      "Tensor grad_input, Tensor grad_target, Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  FUSEDLOSS_IMPL_CROSS_ENTROPY_OPS(m, &fusedloss::ops::loss_only);
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_cross_entropy_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::cross_entropy_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_cross_entropy_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::cross_entropy_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_cross_entropy_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
