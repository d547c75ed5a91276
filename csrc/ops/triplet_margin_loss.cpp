// Operator layer of triplet_margin_loss: schemas, torch's shape rules (checked once, for every
// backend, Meta included), the rows the engine reads and the reduction of its per-row losses.
// Autograd: autograd/triplet_margin_loss.cpp.

#include "ops/triplet_margin_loss.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <c10/core/DefaultDtype.h>
#include <torch/library.h>

#include <array>
#include <cmath>

#include "cpu/gradient_allocator.h"
#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/row_losses.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
using TripletGradients = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
constexpr c10::string_view kOp = "triplet_margin_loss";

struct TripletProblem {
  at::Reduction::Reduction reduction;
  at::ScalarType dtype;            // the three promoted; an integer one computes in the default
  std::vector<c10::SymInt> shape;  // the three broadcast: the rows, then the distance dimension
};

TripletProblem prepare(const Tensor& anchor, const Tensor& positive, const Tensor& negative,
                       double p_norm, c10::string_view reduction) {
  TripletProblem p;
  p.reduction = parse_reduction(kOp, reduction);
  TORCH_CHECK(anchor.device() == positive.device() && anchor.device() == negative.device(),
              "fusedloss.", kOp, ": anchor, positive and negative must be on one device, got ",
              anchor.device(), ", ", positive.device(), " and ", negative.device());
  TORCH_CHECK(anchor.dim() == positive.dim() && positive.dim() == negative.dim(), "fusedloss.",
              kOp,
              ": The anchor, positive, and negative tensors are expected to have the same number "
              "of dimensions, but got: anchor ",
              anchor.dim(), "D, positive ", positive.dim(), "D, and negative ", negative.dim(),
              "D inputs");
  p.dtype = c10::promoteTypes(c10::promoteTypes(anchor.scalar_type(), positive.scalar_type()),
                              negative.scalar_type());
  // torch adds eps (a float) to the difference: integer inputs compute in the default dtype.
  if (c10::isIntegralType(p.dtype, /*includeBool=*/true)) {
    p.dtype = c10::typeMetaToScalarType(c10::get_default_dtype());
  }
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(p.dtype), "fusedloss.", kOp,
                              ": anchor, positive and negative must promote to float32, float64, "
                              "float16 or bfloat16, got ",
                              anchor.scalar_type(), ", ", positive.scalar_type(), " and ",
                              negative.scalar_type());
  const auto pair = broadcast_shape(kOp, "anchor and positive", anchor.sym_sizes(),
                                    positive.sym_sizes());
  const auto shape = broadcast_shape(kOp, "anchor, positive and negative", pair,
                                     negative.sym_sizes());
  p.shape.assign(shape.begin(), shape.end());
  TORCH_CHECK(!std::isinf(p_norm) || p.shape.empty() || p.shape.back() != 0, "fusedloss.", kOp,
              ": cannot compute the inf norm over the last dimension because it is empty (shape ",
              shape, ") and a max or min has no identity");
  return p;
}

// The loss's shape for 'none': every dimension but the last (a 0-d input is one row of one).
std::vector<int64_t> row_shape(at::IntArrayRef shape) {
  return shape.empty() ? std::vector<int64_t>{} : std::vector<int64_t>(shape.begin(), shape.end() - 1);
}

using TripletEngine = void (*)(const TripletMarginSpec&, const TripletMarginOperands&);

template <TripletEngine engine>
TripletGradients forward_on_device(const Tensor& anchor, const Tensor& positive,
                                   const Tensor& negative, double margin, double p_norm,
                                   double eps, bool swap, c10::string_view reduction,
                                   std::array<bool, 3> compute_grad) {
  const TripletProblem p = prepare(anchor, positive, negative, p_norm, reduction);
  const auto shape = C10_AS_INTARRAYREF_SLOW(p.shape);
  const int64_t D = shape.empty() ? 1 : shape.back();
  const auto rows_shape = row_shape(shape);
  const int64_t rows = c10::multiply_integers(rows_shape);
  const auto as_rows = [&](const Tensor& x) {
    return x.to(p.dtype).expand(shape).reshape({rows, D}).contiguous();
  };
  TripletMarginOperands o;
  o.anchor = as_rows(anchor);
  o.positive = as_rows(positive);
  o.negative = as_rows(negative);
  const auto options = o.anchor.options();
  o.row_loss = at::empty({rows}, options.dtype(accumulation_dtype(p.dtype)));
  o.grad_scale = folded_gradient_scale(p.reduction, p.dtype, rows);
  // Only the gradients asked for (the inputs that require one) are allocated and written.
  Tensor* gradients[] = {&o.grad_anchor, &o.grad_positive, &o.grad_negative};
  for (int i = 0; i < 3; ++i) {
    if (compute_grad[i]) *gradients[i] = cpu::empty_gradient({rows, D}, options);
  }
  if (rows > 0) engine({margin, p_norm, eps, swap}, o);
  const Tensor loss = reduce_row_losses(o.row_loss, p.reduction, p.dtype, rows_shape);
  const Tensor scale = row_backward_scale(p.reduction, p.dtype, rows, options.device());
  const auto gradient = [&](const Tensor& g) {
    return g.defined() ? g.view(shape) : at::empty({0}, options);  // distinct: never alias
  };
  return {loss, gradient(o.grad_anchor), gradient(o.grad_positive), gradient(o.grad_negative),
          scale};
}

TripletGradients forward_meta(const Tensor& anchor, const Tensor& positive,
                              const Tensor& negative, double margin, double p_norm, double eps,
                              bool swap, c10::string_view reduction,
                              std::array<bool, 3> compute_grad) {
  const TripletProblem p = prepare(anchor, positive, negative, p_norm, reduction);
  const auto options = anchor.options().dtype(p.dtype);
  const bool none = p.reduction == at::Reduction::None;
  const c10::SymIntArrayRef shape(p.shape);
  const auto rows_shape = shape.empty() ? shape : shape.slice(0, shape.size() - 1);
  const auto gradient = [&](int i) {
    return compute_grad[i] ? at::empty_symint(shape, options) : at::empty({0}, options);
  };
  const auto acc_options = options.dtype(accumulation_dtype(p.dtype));
  return {none ? at::empty_symint(rows_shape, options) : at::empty({}, options), gradient(0),
          gradient(1), gradient(2),
          none ? at::empty({0}, acc_options) : at::empty({}, acc_options)};
}

Tensor loss_only(const Tensor& anchor, const Tensor& positive, const Tensor& negative,
                 double margin, double p_norm, double eps, bool swap,
                 c10::string_view reduction) {
  return std::get<0>(triplet_margin_loss_forward(anchor, positive, negative, margin, p_norm, eps,
                                                 swap, reduction, {false, false, false}));
}

}  // namespace

TripletGradients triplet_margin_loss_forward(const Tensor& anchor, const Tensor& positive,
                                             const Tensor& negative, double margin, double p,
                                             double eps, bool swap, c10::string_view reduction,
                                             std::array<bool, 3> compute_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_triplet_margin_loss_forward", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(anchor, positive, negative, margin, p, eps, swap, reduction, compute_grad);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "triplet_margin_loss(Tensor anchor, Tensor positive, Tensor negative, float margin=1.0, "
      "float p=2.0, float eps=1e-06, bool swap=False, str reduction=\"mean\") -> Tensor");
  m.def(
      "_triplet_margin_loss_forward(Tensor anchor, Tensor positive, Tensor negative, "
      "float margin, float p, float eps, bool swap, str reduction, bool[3] compute_grad) -> "
      "(Tensor loss, Tensor grad_anchor, Tensor grad_positive, Tensor grad_negative, "
      "Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("triplet_margin_loss", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_triplet_margin_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::triplet_margin_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_triplet_margin_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::triplet_margin_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_triplet_margin_loss_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
