// Operator layer of the pointwise losses: schemas, argument validation, and the device-independent
// part of the fused forward (broadcast, dtype promotion, weight layout, output allocation). The
// CPU and CUDA engines only run loops; the Meta kernel gives torch.compile the shapes.

#include "ops/pointwise_losses.h"

#include <ATen/ExpandUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/gradient_allocator.h"
#include "kernels/pointwise_loss.h"
#include "ops/arguments.h"
#include "ops/bad_values.h"

#include <cstring>

namespace fusedloss {
namespace ops {
namespace {

double param_at(c10::string_view op, c10::ArrayRef<double> params, size_t i) {
  TORCH_CHECK_VALUE(i < params.size(), "fusedloss._pointwise_loss_forward: ", op, " takes ", i + 1,
                    " parameters, got ", params.size());
  return params[i];
}

PointwiseLossSpec parse_spec(c10::string_view op, c10::ArrayRef<double> params,
                             c10::string_view reduction) {
  PointwiseLossSpec spec;
  spec.reduction = parse_reduction(op, reduction);
  if (op == "mse_loss") {
    spec.loss = PointwiseLoss::Mse;
  } else if (op == "l1_loss") {
    spec.loss = PointwiseLoss::L1;
  } else if (op == "huber_loss") {
    spec.param = param_at(op, params, 0);
    TORCH_CHECK(spec.param > 0, "fusedloss.huber_loss: delta must be positive, got ", spec.param);
    spec.loss = PointwiseLoss::Huber;
  } else if (op == "smooth_l1_loss") {
    spec.param = param_at(op, params, 0);
    TORCH_CHECK(spec.param >= 0, "fusedloss.smooth_l1_loss: beta must be non-negative, got ",
                spec.param);
    // beta = 0 is L1, as in torch; the SmoothL1 formula would divide 0 by 0 at d = 0.
    spec.loss = spec.param == 0 ? PointwiseLoss::L1 : PointwiseLoss::SmoothL1;
  } else if (op == "binary_cross_entropy") {
    spec.loss = PointwiseLoss::BinaryCrossEntropy;
    spec.bad_kind = BadValueKind::Probability;
  } else if (op == "binary_cross_entropy_with_logits") {
    spec.loss = PointwiseLoss::BinaryCrossEntropyWithLogits;
  } else if (op == "sigmoid_focal_loss") {
    spec.param = param_at(op, params, 0);
    spec.param2 = param_at(op, params, 1);
    TORCH_CHECK_VALUE(spec.param2 >= 0, "fusedloss.sigmoid_focal_loss: gamma must be >= 0, got ",
                      spec.param2);
    TORCH_CHECK_VALUE(spec.param <= 1,
                      "fusedloss.sigmoid_focal_loss: alpha must be in [0, 1] "
                      "(or negative to disable weighting), got ",
                      spec.param);
    spec.loss = PointwiseLoss::SigmoidFocal;
  } else if (op == "soft_margin_loss") {
    spec.loss = PointwiseLoss::SoftMargin;
  } else if (op == "hinge_embedding_loss") {
    spec.param = param_at(op, params, 0);
    TORCH_CHECK_VALUE(!std::isnan(spec.param), "fusedloss.hinge_embedding_loss: margin is NaN");
    spec.loss = PointwiseLoss::HingeEmbedding;
  } else if (op == "hinge_loss") {
    spec.param = param_at(op, params, 0);
    spec.param2 = param_at(op, params, 1);
    TORCH_CHECK_VALUE(!std::isnan(spec.param), "fusedloss.hinge_loss: margin is NaN");
    spec.loss = PointwiseLoss::Hinge;
    spec.bad_kind = BadValueKind::HingeLabel;
  } else {
    TORCH_CHECK_VALUE(false, "fusedloss._pointwise_loss_forward: unknown loss '", op, "'");
  }
  spec.op = static_op_name(op);
  return spec;
}

// Checks what every backend needs and returns the computation dtype.
at::ScalarType check_inputs(c10::string_view op, const Tensor& input, const Tensor& target,
                            const OptionalTensor& weight, const OptionalTensor& pos_weight) {
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", op,
              ": input and target must be on the same device, got input on ", input.device(),
              " and target on ", target.device());
  // Promotion as torch's losses after broadcasting (a 0-d target is no wrapped number there).
  const auto dtype = c10::promoteTypes(input.scalar_type(), target.scalar_type());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(dtype), "fusedloss.", op,
                              ": input and target must promote to float32, float64, float16 or "
                              "bfloat16, got input ",
                              input.scalar_type(), " and target ", target.scalar_type());
  if (op == "binary_cross_entropy" || op == "binary_cross_entropy_with_logits") {
    TORCH_CHECK_VALUE(input.sym_sizes() == target.sym_sizes(), "fusedloss.", op,
                      ": target of shape ", target.sym_sizes(),
                      " must have the same shape as input of shape ", input.sym_sizes());
  }
  for (const auto& [name, tensor] : {std::pair{"weight", &weight}, {"pos_weight", &pos_weight}}) {
    if (!tensor->has_value()) continue;
    const Tensor& w = **tensor;
    TORCH_CHECK(w.device() == input.device(), "fusedloss.", op, ": ", name,
                " must be on the device of input (", input.device(), "), got ", w.device());
    TORCH_CHECK(is_supported_dtype(w.scalar_type()), "fusedloss.", op, ": ", name,
                " must be a floating-point tensor, got ", w.scalar_type());
  }
  return dtype;
}

c10::SymDimVector broadcast_shape(c10::string_view op, const char* what, c10::SymIntArrayRef a,
                                  c10::SymIntArrayRef b) {
  const size_t ndim = std::max(a.size(), b.size());
  c10::SymDimVector shape(ndim);
  for (size_t i = 0; i < ndim; ++i) {
    const bool in_a = i < a.size(), in_b = i < b.size();
    const c10::SymInt& sa = in_a ? a[a.size() - 1 - i] : b[b.size() - 1 - i];
    const c10::SymInt& sb = in_b ? b[b.size() - 1 - i] : sa;
    TORCH_CHECK(sa == sb || sa == 1 || sb == 1, "fusedloss.", op, ": ", what, " of shapes ", a,
                " and ", b, " are not broadcastable (dimension ",
                static_cast<int64_t>(ndim - 1 - i), ": ", sa, " vs ", sb, ")");
    shape[ndim - 1 - i] = sa == 1 ? sb : sa;
  }
  return shape;
}

// weight or pos_weight laid out for the engines: if its broadcast to `shape` is a leading run of
// broadcast dimensions followed by full ones (a per-class vector, a scalar, a full tensor), its
// values repeat along the flat index and it is passed as is; otherwise it is expanded.
Tensor periodic_operand(c10::string_view op, const char* name, const Tensor& w,
                        at::IntArrayRef shape, at::ScalarType dtype) {
  const auto expanded = broadcast_shape(op, name, w.sym_sizes(), c10::fromIntArrayRefSlow(shape));
  TORCH_CHECK(static_cast<size_t>(expanded.size()) == shape.size() &&
                  std::equal(shape.begin(), shape.end(), expanded.begin()),
              "fusedloss.", op, ": ", name, " of shape ", w.sizes(),
              " does not broadcast to the input shape ", shape);
  const Tensor v = w.to(dtype);
  const int64_t pad = static_cast<int64_t>(shape.size()) - v.dim();
  int64_t first_full = static_cast<int64_t>(shape.size());  // dims >= first_full match shape
  while (first_full > 0 && first_full - 1 >= pad &&
         v.size(first_full - 1 - pad) == shape[first_full - 1]) {
    --first_full;
  }
  bool leading_broadcast = true;
  for (int64_t d = pad; d < first_full; ++d) leading_broadcast &= v.size(d - pad) == 1;
  if (leading_broadcast) return v.contiguous().view(-1);
  return v.expand(shape).contiguous().view(-1);
}

using EngineFn = void (*)(const PointwiseLossSpec&, const PointwiseOperands&);

// The first element the formula rejected, for the CPU's immediate error (the CUDA engine records
// it itself).
[[noreturn]] void raise_invalid(const PointwiseLossSpec& spec, const PointwiseOperands& o,
                                int64_t invalid) {
  const bool labels = spec.bad_kind == BadValueKind::HingeLabel;
  const Tensor& checked = labels ? o.target : o.input;
  const Tensor bad = labels ? checked.ne(1).logical_and_(checked.ne(-1))
                            : checked.ge(0).logical_and_(checked.le(1)).logical_not_();
  BadValueRecord r = empty_bad_value_record();
  r.kind = static_cast<int32_t>(spec.bad_kind);
  r.op = reinterpret_cast<unsigned long long>(spec.op);
  r.count = static_cast<unsigned long long>(invalid);
  r.limit = checked.numel();
  r.position = first_true_position(bad);
  const double value = checked.reshape({-1})[r.position].item<double>();
  std::memcpy(&r.value, &value, sizeof(value));
  raise_bad_value(r);
}

template <EngineFn regression, EngineFn binary>
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_on_device(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight,
    const OptionalTensor& pos_weight, c10::string_view op, c10::ArrayRef<double> params,
    c10::string_view reduction, bool compute_grad, bool compute_target_grad) {
  auto spec = parse_spec(op, params, reduction);
  const auto dtype = check_inputs(op, input, target, weight, pos_weight);
  TORCH_CHECK(compute_grad || !compute_target_grad, "fusedloss._pointwise_loss_forward: ",
              "compute_target_grad needs compute_grad (the target gradient is computed with it)");
  const auto sym_shape =
      broadcast_shape(op, "input and target", input.sym_sizes(), target.sym_sizes());
  const auto shape = C10_AS_INTARRAYREF_SLOW(sym_shape);
  PointwiseOperands o;
  o.input = input.to(dtype).expand(shape).contiguous();
  o.target = target.to(dtype).expand(shape).contiguous();
  if (weight.has_value()) o.weight = periodic_operand(op, "weight", *weight, shape, dtype);
  if (pos_weight.has_value()) {
    o.pos_weight = periodic_operand(op, "pos_weight", *pos_weight, shape, dtype);
  }
  const auto options = o.input.options();
  const bool reduced = spec.reduction != at::Reduction::None;
  o.loss = reduced ? at::empty({}, options) : at::empty(shape, options);
  const auto acc_options = options.dtype(accumulation_dtype(dtype));
  o.backward_scale = reduced ? at::empty({}, acc_options) : at::empty({0}, acc_options);
  if (compute_grad) o.grad_input = cpu::empty_gradient(shape, options);
  if (compute_target_grad) {
    TORCH_CHECK(target_gradient(op) == TargetGradient::Formula, "fusedloss.", op,
                ": compute_target_grad is only for losses with a target gradient formula");
    o.grad_target = cpu::empty_gradient(shape, options);
  }
  if (spec.bad_kind != BadValueKind::None && o.input.is_cpu()) {
    o.invalid_count = at::empty({}, options.dtype(at::kLong));
  }
  if (spec.reduction == at::Reduction::Mean) {
    const double n = static_cast<double>(o.input.numel());
    (folds_mean_into_gradient(dtype) ? spec.grad_scale : spec.backward_scale) = 1.0 / n;
  }
  (is_regression(spec.loss) ? regression : binary)(spec, o);

  if (o.invalid_count.defined()) {
    const int64_t invalid = o.invalid_count.item<int64_t>();
    if (invalid != 0) raise_invalid(spec, o, invalid);
  }
  const auto empty = [&] { return at::empty({0}, options); };
  return {o.loss, compute_grad ? o.grad_input : empty(),
          compute_target_grad ? o.grad_target : empty(), o.backward_scale};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_meta(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight,
    const OptionalTensor& pos_weight, c10::string_view op, c10::ArrayRef<double> params,
    c10::string_view reduction, bool compute_grad, bool compute_target_grad) {
  const auto spec = parse_spec(op, params, reduction);
  const auto options = input.options().dtype(check_inputs(op, input, target, weight, pos_weight));
  TORCH_CHECK(compute_grad || !compute_target_grad, "fusedloss._pointwise_loss_forward: ",
              "compute_target_grad needs compute_grad (the target gradient is computed with it)");
  const auto shape = broadcast_shape(op, "input and target", input.sym_sizes(), target.sym_sizes());
  const auto full = [&] { return at::empty_symint(shape, options); };
  const auto empty = [&] { return at::empty({0}, options); };
  const bool reduced = spec.reduction != at::Reduction::None;
  const auto acc_options = options.dtype(accumulation_dtype(options.dtype().toScalarType()));
  return {reduced ? at::empty({}, options) : full(), compute_grad ? full() : empty(),
          compute_target_grad ? full() : empty(),
          reduced ? at::empty({}, acc_options) : at::empty({0}, acc_options)};
}

// A public op below autograd: the loss alone.
Tensor loss_only(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                 const OptionalTensor& pos_weight, const char* op, std::vector<double> params,
                 c10::string_view reduction) {
  return std::get<0>(
      pointwise_loss_forward(input, target, weight, pos_weight, op, params, reduction));
}

}  // namespace

TargetGradient target_gradient(c10::string_view op) {
  if (op == "soft_margin_loss") return TargetGradient::NotDifferentiable;
  if (op == "hinge_embedding_loss") return TargetGradient::None;
  if (op == "binary_cross_entropy" || op == "binary_cross_entropy_with_logits" ||
      op == "sigmoid_focal_loss" || op == "hinge_loss") {
    return TargetGradient::Formula;
  }
  return TargetGradient::NegatedInputGradient;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> pointwise_loss_forward(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight,
    const OptionalTensor& pos_weight, c10::string_view op, c10::ArrayRef<double> params,
    c10::string_view reduction, bool compute_grad, bool compute_target_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_pointwise_loss_forward", "")
                           .typed<decltype(pointwise_loss_forward)>();
  return handle.call(input, target, weight, pos_weight, op, params, reduction, compute_grad,
                     compute_target_grad);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def("mse_loss(Tensor input, Tensor target, str reduction=\"mean\") -> Tensor");
  m.def("l1_loss(Tensor input, Tensor target, str reduction=\"mean\") -> Tensor");
  m.def(
      "huber_loss(Tensor input, Tensor target, str reduction=\"mean\", float delta=1.0) -> Tensor");
  m.def(
      "smooth_l1_loss(Tensor input, Tensor target, str reduction=\"mean\", float beta=1.0) -> "
      "Tensor");
  m.def(
      "binary_cross_entropy(Tensor input, Tensor target, Tensor? weight=None, "
      "str reduction=\"mean\") -> Tensor");
  m.def(
      "binary_cross_entropy_with_logits(Tensor input, Tensor target, Tensor? weight=None, "
      "Tensor? pos_weight=None, str reduction=\"mean\") -> Tensor");
  m.def(
      "sigmoid_focal_loss(Tensor inputs, Tensor targets, float alpha=0.25, float gamma=2.0, "
      "str reduction=\"none\") -> Tensor");
  m.def("soft_margin_loss(Tensor input, Tensor target, str reduction=\"mean\") -> Tensor");
  m.def(
      "hinge_embedding_loss(Tensor input, Tensor target, float margin=1.0, "
      "str reduction=\"mean\") -> Tensor");
  m.def(
      "hinge_loss(Tensor input, Tensor target, float margin=1.0, bool squared=False, "
      "str reduction=\"mean\") -> Tensor");
  m.def(
      "_pointwise_loss_forward(Tensor input, Tensor target, Tensor? weight, Tensor? pos_weight, "
      "str loss, float[] params, str reduction, bool compute_grad=False, "
      "bool compute_target_grad=False) "
      "-> (Tensor loss, Tensor grad_input, Tensor grad_target, Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  FUSEDLOSS_IMPL_POINTWISE_OPS(m, &fusedloss::ops::loss_only);
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  using namespace fusedloss;
  m.impl("_pointwise_loss_forward",
         TORCH_FN((ops::forward_on_device<cpu::regression_loss_kernel, cpu::binary_loss_kernel>)));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  using namespace fusedloss;
  m.impl(
      "_pointwise_loss_forward",
      TORCH_FN((ops::forward_on_device<cuda::regression_loss_kernel, cuda::binary_loss_kernel>)));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_pointwise_loss_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
