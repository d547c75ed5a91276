// Operator layer of cosine_embedding_loss: schemas, torch's shape rules (checked once, for every
// backend, Meta included), the rows the engine reads and the reduction of its per-row losses.
// Autograd: autograd/cosine_embedding_loss.cpp.

#include "ops/cosine_embedding_loss.h"

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
constexpr c10::string_view kOp = "cosine_embedding_loss";

struct CosineProblem {
  at::Reduction::Reduction reduction;
  at::ScalarType dtype;            // the inputs', promoted
  std::vector<c10::SymInt> shape;  // input1 and input2 broadcast: (D) or (N, D)
};

CosineProblem prepare(const Tensor& input1, const Tensor& input2, const Tensor& target,
                      double margin, c10::string_view reduction) {
  CosineProblem p;
  p.reduction = parse_reduction(kOp, reduction);
  TORCH_CHECK_VALUE(!std::isnan(margin), "fusedloss.", kOp, ": margin is NaN");
  TORCH_CHECK(input1.device() == input2.device() && input1.device() == target.device(),
              "fusedloss.", kOp, ": input1, input2 and target must be on one device, got ",
              input1.device(), ", ", input2.device(), " and ", target.device());
  p.dtype = c10::promoteTypes(input1.scalar_type(), input2.scalar_type());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(p.dtype), "fusedloss.", kOp,
                              ": input1 and input2 must promote to float32, float64, float16 or "
                              "bfloat16, got ",
                              input1.scalar_type(), " and ", input2.scalar_type());
  // torch's rules: a 1-D target with (N, D) inputs, a 0-d target with (D) inputs.
  TORCH_CHECK(target.dim() <= 1, "fusedloss.", kOp,
              ": 0D or 1D target tensor expected, multi-target not supported, got shape ",
              target.sym_sizes());
  const int64_t input_dim = target.dim() + 1;
  TORCH_CHECK(input1.dim() == input_dim && input2.dim() == input_dim, "fusedloss.", kOp, ": ",
              target.dim(), "D target tensor expects ", input_dim,
              "D input tensors, but found inputs with sizes ", input1.sym_sizes(), " and ",
              input2.sym_sizes());
  const auto shape =
      broadcast_shape(kOp, "input1 and input2", input1.sym_sizes(), input2.sym_sizes());
  p.shape.assign(shape.begin(), shape.end());
  const c10::SymInt rows = input_dim == 1 ? c10::SymInt(1) : p.shape[0];
  TORCH_CHECK(target.sym_numel() == rows || target.sym_numel() == 1, "fusedloss.", kOp,
              ": target must hold one label per row (", rows, "), got shape ", target.sym_sizes());
  return p;
}

using CosineEngine = void (*)(const CosineEmbeddingSpec&, const CosineEmbeddingOperands&);

template <CosineEngine engine>
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_on_device(const Tensor& input1,
                                                             const Tensor& input2,
                                                             const Tensor& target, double margin,
                                                             c10::string_view reduction,
                                                             bool compute_grad) {
  const CosineProblem p = prepare(input1, input2, target, margin, reduction);
  const auto shape = C10_AS_INTARRAYREF_SLOW(p.shape);
  const int64_t rows = shape.size() == 1 ? 1 : shape[0], D = shape.back();
  CosineEmbeddingOperands o;
  o.input1 = input1.to(p.dtype).expand(shape).reshape({rows, D}).contiguous();
  o.input2 = input2.to(p.dtype).expand(shape).reshape({rows, D}).contiguous();
  o.target = target.to(p.dtype).reshape({-1}).expand({rows}).contiguous();
  const auto options = o.input1.options();
  o.row_loss = at::empty({rows}, options.dtype(accumulation_dtype(p.dtype)));
  o.grad_scale = folded_gradient_scale(p.reduction, p.dtype, rows);
  if (compute_grad) {
    o.grad1 = cpu::empty_gradient({rows, D}, options);
    o.grad2 = cpu::empty_gradient({rows, D}, options);
  }
  engine({margin}, o);
  const Tensor loss =
      reduce_row_losses(o.row_loss, p.reduction, p.dtype,
                        target.dim() == 0 ? at::IntArrayRef{} : at::IntArrayRef{rows});
  const Tensor scale = row_backward_scale(p.reduction, p.dtype, rows, options.device());
  const auto empty = [&] { return at::empty({0}, options); };  // distinct outputs never alias
  return {loss, compute_grad ? o.grad1.view(shape) : empty(),
          compute_grad ? o.grad2.view(shape) : empty(), scale};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> forward_meta(const Tensor& input1, const Tensor& input2,
                                                        const Tensor& target, double margin,
                                                        c10::string_view reduction,
                                                        bool compute_grad) {
  const CosineProblem p = prepare(input1, input2, target, margin, reduction);
  const auto options = input1.options().dtype(p.dtype);
  const auto acc_options = options.dtype(accumulation_dtype(p.dtype));
  const bool none = p.reduction == at::Reduction::None;
  c10::SymDimVector loss_shape;
  if (target.dim() == 1) loss_shape.push_back(p.shape[0]);
  const auto gradient = [&] {
    return compute_grad ? at::empty_symint(p.shape, options) : at::empty({0}, options);
  };
  return {none ? at::empty_symint(loss_shape, options) : at::empty({}, options), gradient(),
          gradient(), none ? at::empty({0}, acc_options) : at::empty({}, acc_options)};
}

Tensor loss_only(const Tensor& input1, const Tensor& input2, const Tensor& target, double margin,
                 c10::string_view reduction) {
  return std::get<0>(cosine_embedding_loss_forward(input1, input2, target, margin, reduction,
                                                   /*compute_grad=*/false));
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> cosine_embedding_loss_forward(
    const Tensor& input1, const Tensor& input2, const Tensor& target, double margin,
    c10::string_view reduction, bool compute_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_cosine_embedding_loss_forward", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(input1, input2, target, margin, reduction, compute_grad);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "cosine_embedding_loss(Tensor input1, Tensor input2, Tensor target, float margin=0.0, "
      "str reduction=\"mean\") -> Tensor");
  m.def(
      "_cosine_embedding_loss_forward(Tensor input1, Tensor input2, Tensor target, float margin, "
      "str reduction, bool compute_grad) -> (Tensor loss, Tensor grad_input1, Tensor grad_input2, "
      "Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("cosine_embedding_loss", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_cosine_embedding_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::cosine_embedding_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_cosine_embedding_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::cosine_embedding_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_cosine_embedding_loss_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
