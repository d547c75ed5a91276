// Operator layer of the pointwise (elementwise) losses: schemas, argument validation, and the
// device-independent part of the fused forward (broadcast, dtype promotion, output allocation).
// The CPU and CUDA engines only run loops; the Meta kernel gives torch.compile the shapes.

#include "ops/pointwise_losses.h"

#include <ATen/ExpandUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/gradient_allocator.h"
#include "kernels/pointwise_loss.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;

at::Reduction::Reduction parse_reduction(c10::string_view op, c10::string_view reduction) {
  if (reduction == "mean") return at::Reduction::Mean;
  if (reduction == "sum") return at::Reduction::Sum;
  if (reduction == "none") return at::Reduction::None;
  TORCH_CHECK_VALUE(false, "fusedloss.", op, ": reduction must be 'none', 'mean' or 'sum', got '",
                    reduction, "'");
}

PointwiseLossSpec parse_spec(c10::string_view op, double param, c10::string_view reduction) {
  const auto red = parse_reduction(op, reduction);
  if (op == "mse_loss") return {PointwiseLoss::Mse, 0.0, red};
  if (op == "l1_loss") return {PointwiseLoss::L1, 0.0, red};
  if (op == "huber_loss") {
    TORCH_CHECK(param > 0, "fusedloss.huber_loss: delta must be positive, got ", param);
    return {PointwiseLoss::Huber, param, red};
  }
  if (op == "smooth_l1_loss") {
    TORCH_CHECK(param >= 0, "fusedloss.smooth_l1_loss: beta must be non-negative, got ", param);
    // beta = 0 is L1, as in torch; the SmoothL1 formula would divide 0 by 0 at d = 0.
    return {param == 0 ? PointwiseLoss::L1 : PointwiseLoss::SmoothL1, param, red};
  }
  TORCH_CHECK_VALUE(false, "fusedloss._pointwise_loss_forward: unknown loss '", op,
                    "'; expected mse_loss, l1_loss, huber_loss or smooth_l1_loss");
}

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Checks what every backend needs and returns the computation dtype.
at::ScalarType check_inputs(c10::string_view op, const Tensor& input, const Tensor& target) {
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", op,
              ": input and target must be on the same device, got input on ", input.device(),
              " and target on ", target.device());
  // Promotion as torch's losses after broadcasting (a 0-d target is no wrapped number there).
  const auto dtype = c10::promoteTypes(input.scalar_type(), target.scalar_type());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(dtype), "fusedloss.", op,
                              ": input and target must promote to float32, float64, float16 or "
                              "bfloat16, got input ",
                              input.scalar_type(), " and target ", target.scalar_type());
  return dtype;
}

c10::SymDimVector broadcast_shape(c10::string_view op, const Tensor& input, const Tensor& target) {
  const auto a = input.sym_sizes();
  const auto b = target.sym_sizes();
  const size_t ndim = std::max(a.size(), b.size());
  c10::SymDimVector shape(ndim);
  for (size_t i = 0; i < ndim; ++i) {
    const bool in_a = i < a.size(), in_b = i < b.size();
    const c10::SymInt& sa = in_a ? a[a.size() - 1 - i] : b[b.size() - 1 - i];
    const c10::SymInt& sb = in_b ? b[b.size() - 1 - i] : sa;
    TORCH_CHECK(sa == sb || sa == 1 || sb == 1, "fusedloss.", op, ": input of shape ",
                input.sym_sizes(), " and target of shape ", target.sym_sizes(),
                " are not broadcastable (dimension ", static_cast<int64_t>(ndim - 1 - i), ": ",
                sa, " vs ", sb, ")");
    shape[ndim - 1 - i] = sa == 1 ? sb : sa;
  }
  return shape;
}

using EngineFn = void (*)(const PointwiseLossSpec&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&);

// The fused forward on a real device: promote, broadcast, make contiguous, allocate, run engine.
template <EngineFn engine>
std::tuple<Tensor, Tensor> forward_on_device(const Tensor& input, const Tensor& target,
                                             c10::string_view op, double param,
                                             c10::string_view reduction, bool compute_grad,
                                             bool mean_in_grad) {
  auto spec = parse_spec(op, param, reduction);
  const auto dtype = check_inputs(op, input, target);
  const auto sym_shape = broadcast_shape(op, input, target);
  const auto shape = C10_AS_INTARRAYREF_SLOW(sym_shape);
  const Tensor x = input.to(dtype).expand(shape).contiguous();
  const Tensor t = target.to(dtype).expand(shape).contiguous();
  Tensor loss = spec.reduction == at::Reduction::None ? at::empty(shape, x.options())
                                                      : at::empty({}, x.options());
  Tensor grad = compute_grad ? cpu::empty_gradient(shape, x.options()) : at::empty({0}, x.options());
  if (mean_in_grad && spec.reduction == at::Reduction::Mean) {
    spec.grad_scale = 1.0 / static_cast<double>(x.numel());
  }
  engine(spec, x, t, loss, compute_grad ? grad : Tensor());
  return {loss, grad};
}

std::tuple<Tensor, Tensor> forward_meta(const Tensor& input, const Tensor& target,
                                        c10::string_view op, double param,
                                        c10::string_view reduction, bool compute_grad,
                                        bool /*mean_in_grad*/) {
  const auto spec = parse_spec(op, param, reduction);
  const auto options = input.options().dtype(check_inputs(op, input, target));
  const auto shape = broadcast_shape(op, input, target);
  Tensor loss = spec.reduction == at::Reduction::None ? at::empty_symint(shape, options)
                                                      : at::empty({}, options);
  Tensor grad = compute_grad ? at::empty_symint(shape, options) : at::empty({0}, options);
  return {loss, grad};
}

// The public ops below autograd (no gradient wanted): the loss alone.
Tensor mse_loss(const Tensor& input, const Tensor& target, c10::string_view reduction) {
  return std::get<0>(pointwise_loss_forward(input, target, "mse_loss", 0.0, reduction));
}
Tensor l1_loss(const Tensor& input, const Tensor& target, c10::string_view reduction) {
  return std::get<0>(pointwise_loss_forward(input, target, "l1_loss", 0.0, reduction));
}
Tensor huber_loss(const Tensor& input, const Tensor& target, c10::string_view reduction,
                  double delta) {
  return std::get<0>(pointwise_loss_forward(input, target, "huber_loss", delta, reduction));
}
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, c10::string_view reduction,
                      double beta) {
  return std::get<0>(
      pointwise_loss_forward(input, target, "smooth_l1_loss", beta, reduction));
}

}  // namespace

std::tuple<Tensor, Tensor> pointwise_loss_forward(const Tensor& input, const Tensor& target,
                                                  c10::string_view loss, double param,
                                                  c10::string_view reduction, bool compute_grad,
                                                  bool mean_in_grad) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fusedloss::_pointwise_loss_forward", "")
                       .typed<decltype(pointwise_loss_forward)>();
  return op.call(input, target, loss, param, reduction, compute_grad, mean_in_grad);
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
      "_pointwise_loss_forward(Tensor input, Tensor target, str loss, float param, str reduction, "
      "bool compute_grad, bool mean_in_grad=False) -> (Tensor loss, Tensor grad)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  using namespace fusedloss::ops;
  m.impl("mse_loss", TORCH_FN(mse_loss));
  m.impl("l1_loss", TORCH_FN(l1_loss));
  m.impl("huber_loss", TORCH_FN(huber_loss));
  m.impl("smooth_l1_loss", TORCH_FN(smooth_l1_loss));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_pointwise_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::pointwise_loss_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_pointwise_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::pointwise_loss_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_pointwise_loss_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
