// Operator layer of the elementwise losses: what each declaration (pointwise_declarations.h)
// becomes. prepare() checks a call and describes the problem (computation dtype, broadcast shape,
// the engine's spec) for the CPU, CUDA and Meta kernels alike; the device kernel lays out the
// operands (broadcast, dtype promotion, weights read in place) and allocates the outputs; the
// engines only run loops. Every declared loss is registered here: its public op and its internal
// op `_<name>_forward`, with CPU, CUDA and Meta kernels.

#include "ops/pointwise_losses.h"

#include <ATen/ExpandUtils.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstring>

#include "cpu/gradient_allocator.h"
#include "engines/bad_values.h"
#include "engines/pointwise_engine.h"
#include "ops/arguments.h"

namespace fusedloss {
namespace ops {
namespace {

// Checks what every backend needs and returns the computation dtype.
at::ScalarType check_inputs(c10::string_view op, const Tensor& input, const Tensor& target,
                            const OptionalTensor& weight, const char* weight_name,
                            const OptionalTensor& pos_weight, bool same_shape) {
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", op,
              ": input and target must be on the same device, got input on ", input.device(),
              " and target on ", target.device());
  // Promotion as torch's losses after broadcasting (a 0-d target is no wrapped number there).
  const auto dtype = c10::promoteTypes(input.scalar_type(), target.scalar_type());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(dtype), "fusedloss.", op,
                              ": input and target must promote to float32, float64, float16 or "
                              "bfloat16, got input ",
                              input.scalar_type(), " and target ", target.scalar_type());
  if (same_shape) {
    TORCH_CHECK_VALUE(input.sym_sizes() == target.sym_sizes(), "fusedloss.", op,
                      ": target of shape ", target.sym_sizes(),
                      " must have the same shape as input of shape ", input.sym_sizes());
  }
  for (const auto& [name, tensor] :
       {std::pair{weight_name, &weight}, {"pos_weight", &pos_weight}}) {
    if (!tensor->has_value()) continue;
    const Tensor& w = **tensor;
    TORCH_CHECK(w.device() == input.device(), "fusedloss.", op, ": ", name,
                " must be on the device of input (", input.device(), "), got ", w.device());
    TORCH_CHECK(is_supported_dtype(w.scalar_type()), "fusedloss.", op, ": ", name,
                " must be a floating-point tensor, got ", w.scalar_type());
  }
  return dtype;
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

struct PointwiseProblem {
  PointwiseLossSpec spec;
  at::ScalarType dtype;     // of the computation: input's and target's, promoted
  c10::SymDimVector shape;  // input and target broadcast
};

PointwiseProblem prepare(const PointwiseCall& c, bool compute_grad, bool compute_target_grad,
                         TargetGradient target_gradient) {
  const char* op = c.spec.op;
  PointwiseProblem p{
      c.spec,
      check_inputs(op, c.input, c.target, c.weight, c.weight_name, c.pos_weight, c.same_shape),
      broadcast_shape(op, "input and target", c.input.sym_sizes(), c.target.sym_sizes())};
  p.spec.reduction = parse_reduction(op, c.reduction);
  TORCH_CHECK(compute_grad || !compute_target_grad, "fusedloss._", op, "_forward: ",
              "compute_target_grad needs compute_grad (the target gradient is computed with it)");
  TORCH_CHECK(!compute_target_grad || target_gradient == TargetGradient::Formula, "fusedloss._", op,
              "_forward: compute_target_grad is only for losses with a target gradient formula");
  return p;
}

using EngineFn = void (*)(const PointwiseLossSpec&, const PointwiseOperands&);

// The first element the formula rejected, for the CPU's immediate error (the CUDA engine records
// it itself).
[[noreturn]] void raise_invalid(const PointwiseLossSpec& spec, const PointwiseOperands& o,
                                int64_t invalid) {
  const bool labels = spec.bad_kind == BadValueKind::HingeLabel;
  const bool variance = spec.bad_kind == BadValueKind::NegativeVariance;
  const Tensor& checked = labels || variance ? o.target : o.input;
  const Tensor bad = labels     ? checked.ne(1).logical_and_(checked.ne(-1))
                     : variance ? checked.lt(0)
                                : checked.ge(0).logical_and_(checked.le(1)).logical_not_();
  BadValueRecord r = empty_bad_value_record();
  r.kind = static_cast<int32_t>(spec.bad_kind);
  r.op = reinterpret_cast<unsigned long long>(static_op_name(spec.op));
  r.count = static_cast<unsigned long long>(invalid);
  r.limit = checked.numel();
  r.position = first_true_position(bad);
  const double value = checked.reshape({-1})[r.position].item<double>();
  std::memcpy(&r.value, &value, sizeof(value));
  raise_bad_value(r);
}

template <EngineFn regression, EngineFn binary>
PointwiseResult forward_on_device(const PointwiseCall& c, bool compute_grad,
                                  bool compute_target_grad, TargetGradient target_gradient) {
  PointwiseProblem p = prepare(c, compute_grad, compute_target_grad, target_gradient);
  PointwiseLossSpec& spec = p.spec;
  const char* op = spec.op;
  const auto shape = C10_AS_INTARRAYREF_SLOW(p.shape);
  PointwiseOperands o;
  o.input = c.input.to(p.dtype).expand(shape).contiguous();
  o.target = c.target.to(p.dtype).expand(shape).contiguous();
  if (c.weight.has_value()) {
    o.weight = periodic_operand(op, c.weight_name, *c.weight, shape, p.dtype);
  }
  if (c.pos_weight.has_value()) {
    o.pos_weight = periodic_operand(op, "pos_weight", *c.pos_weight, shape, p.dtype);
  }
  const auto options = o.input.options();
  const bool reduced = spec.reduction != at::Reduction::None;
  o.loss = reduced ? at::empty({}, options) : at::empty(shape, options);
  const auto acc_options = options.dtype(accumulation_dtype(p.dtype));
  o.backward_scale = reduced ? at::empty({}, acc_options) : at::empty({0}, acc_options);
  if (compute_grad) o.grad_input = cpu::empty_gradient(shape, options);
  if (compute_target_grad) o.grad_target = cpu::empty_gradient(shape, options);
  if (spec.bad_kind != BadValueKind::None && o.input.is_cpu()) {
    o.invalid_count = at::empty({}, options.dtype(at::kLong));
  }
  if (spec.reduction == at::Reduction::Mean) {
    // kl_div's 'batchmean' divides by the input's first size (0-d inputs are 'sum' in bind).
    spec.mean_divisor = static_cast<double>(c.batch_mean ? c.input.size(0) : o.input.numel());
    (folds_mean_into_gradient(p.dtype) ? spec.grad_scale : spec.backward_scale) =
        1.0 / spec.mean_divisor;
  }
  (std::holds_alternative<RegressionLoss>(spec.loss) ? regression : binary)(spec, o);

  if (o.invalid_count.defined()) {
    const int64_t invalid = o.invalid_count.item<int64_t>();
    if (invalid != 0) raise_invalid(spec, o, invalid);
  }
  const auto empty = [&] { return at::empty({0}, options); };
  return {o.loss, compute_grad ? o.grad_input : empty(),
          compute_target_grad ? o.grad_target : empty(), o.backward_scale};
}

PointwiseResult forward_meta(const PointwiseCall& c, bool compute_grad, bool compute_target_grad,
                             TargetGradient target_gradient) {
  const PointwiseProblem p = prepare(c, compute_grad, compute_target_grad, target_gradient);
  const auto options = c.input.options().dtype(p.dtype);
  const auto full = [&] { return at::empty_symint(p.shape, options); };
  const auto empty = [&] { return at::empty({0}, options); };
  const bool reduced = p.spec.reduction != at::Reduction::None;
  const auto acc_options = options.dtype(accumulation_dtype(p.dtype));
  return {reduced ? at::empty({}, options) : full(), compute_grad ? full() : empty(),
          compute_target_grad ? full() : empty(),
          reduced ? at::empty({}, acc_options) : at::empty({0}, acc_options)};
}

// The kernels of one declared loss, with the signatures its schemas give them.
template <typename D, typename Bind = decltype(&D::bind)>
struct Kernels;

template <typename D, typename... Args>
struct Kernels<D, PointwiseCall (*)(Args...)> {
  template <EngineFn regression, EngineFn binary>
  static PointwiseResult on_device(Args... args, bool compute_grad, bool compute_target_grad) {
    return forward_on_device<regression, binary>(D::bind(args...), compute_grad,
                                                 compute_target_grad, D::kTargetGradient);
  }
  static PointwiseResult meta(Args... args, bool compute_grad, bool compute_target_grad) {
    return forward_meta(D::bind(args...), compute_grad, compute_target_grad, D::kTargetGradient);
  }
  // The public op below autograd: the loss alone.
  static Tensor loss_only(Args... args) {
    return std::get<0>(Declared<D>::forward(args..., false, false));
  }
};

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  using namespace fusedloss::ops;
  for_each_declared([&]<typename D>() {
    m.def(Declared<D>::public_schema().c_str());
    m.def(Declared<D>::internal_schema().c_str());
  });
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  using namespace fusedloss::ops;
  for_each_declared([&]<typename D>() { m.impl(D::kName, TORCH_FN(Kernels<D>::loss_only)); });
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  using namespace fusedloss;
  using namespace fusedloss::ops;
  for_each_declared([&]<typename D>() {
    m.impl(
        Declared<D>::internal_name().c_str(),
        TORCH_FN((
            Kernels<D>::template on_device<cpu::regression_loss_kernel, cpu::binary_loss_kernel>)));
  });
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  using namespace fusedloss;
  using namespace fusedloss::ops;
  for_each_declared([&]<typename D>() {
    m.impl(Declared<D>::internal_name().c_str(),
           TORCH_FN((Kernels<D>::template on_device<cuda::regression_loss_kernel,
                                                    cuda::binary_loss_kernel>)));
  });
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  using namespace fusedloss::ops;
  for_each_declared([&]<typename D>() {
    m.impl(Declared<D>::internal_name().c_str(), TORCH_FN(Kernels<D>::meta));
  });
}
