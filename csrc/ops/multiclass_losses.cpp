// Operator layer of the multi-class losses: schemas, argument validation and the
// device-independent part of each forward (class-dimension layout, target check, denominators,
// the reduction over rows). The row engines only run loops over rows; Meta kernels give
// torch.compile the shapes.
//
// Layout: input (C), (N, C) or (N, C, d1, ..., dk) becomes R rows of C contiguous logits (for
// k > 0 that is one transposing copy), and the gradient the engine writes in that layout is
// handed back as a strided view with the input's shape.

#include "ops/multiclass_losses.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "cpu/gradient_allocator.h"
#include "kernels/multiclass_loss.h"
#include "ops/cross_entropy_common.h"

namespace fusedloss {
namespace ops {
namespace {

// What the input and target of cross_entropy / nll_loss describe.
struct ClassProblem {
  int64_t class_dim = 0;  // 0 for an input (C), else 1
  bool probability_targets = false;
  c10::SymDimVector loss_shape;  // of reduction='none': the input's without the class dimension
};

ClassProblem check_class_problem(c10::string_view op, const Tensor& input, const Tensor& target,
                                 const OptionalTensor& weight, int64_t ignore_index,
                                 bool allow_probabilities) {
  TORCH_CHECK(input.dim() >= 1, "fusedloss.", op,
              ": input must have a class dimension: (C), (N, C) or (N, C, d1, ..., dk); got a "
              "0-d tensor");
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(input.scalar_type()), "fusedloss.", op,
                              ": input must be float32, float64, float16 or bfloat16, got ",
                              input.scalar_type());
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", op,
              ": input and target must be on the same device, got input on ", input.device(),
              " and target on ", target.device());
  ClassProblem p;
  p.class_dim = input.dim() == 1 ? 0 : 1;
  const auto sizes = input.sym_sizes();
  const c10::SymInt& classes = sizes[p.class_dim];
  for (int64_t d = 0; d < input.dim(); ++d) {
    if (d != p.class_dim) p.loss_shape.push_back(sizes[d]);
  }
  if (allow_probabilities && target.sym_sizes() == sizes) {
    p.probability_targets = true;
    TORCH_CHECK(at::isFloatingType(target.scalar_type()), "fusedloss.", op,
                ": a target of the input's shape holds class probabilities and must be floating "
                "point, got ",
                target.scalar_type());
    TORCH_CHECK(is_supported_dtype(target.scalar_type()), "fusedloss.", op,
                ": probability target must be float32, float64, float16 or bfloat16, got ",
                target.scalar_type());
    TORCH_CHECK(ignore_index < 0, "fusedloss.", op,
                ": ignore_index is not supported for probability (floating point) targets, got ",
                ignore_index);
  } else {
    TORCH_CHECK(
        target.scalar_type() == at::kLong || target.scalar_type() == at::kByte, "fusedloss.", op,
        ": class-index target must be int64 (or uint8), as in torch; got ", target.scalar_type(),
        allow_probabilities ? " (a floating target must have the input's shape)" : "");
    if (input.dim() >= 2 && target.dim() >= 1) {
      TORCH_CHECK_VALUE(sizes[0] == target.sym_sizes()[0], "fusedloss.", op,
                        ": expected input batch_size (", sizes[0], ") to match target batch_size (",
                        target.sym_sizes()[0], ")");
    }
    TORCH_CHECK(target.sym_sizes() == c10::SymIntArrayRef(p.loss_shape), "fusedloss.", op,
                ": target of shape ", target.sym_sizes(), " does not match input of shape ", sizes,
                "; expected target shape ", c10::SymIntArrayRef(p.loss_shape),
                " (the input's without the class dimension ", p.class_dim, ")");
  }
  if (weight.has_value()) {
    const Tensor& w = *weight;
    TORCH_CHECK(w.dim() == 1 && w.sym_numel() == classes, "fusedloss.", op,
                ": weight must be a 1-D tensor with one value per class (", classes,
                "), got shape ", w.sym_sizes());
    TORCH_CHECK(w.scalar_type() == input.scalar_type(), "fusedloss.", op,
                ": weight must have the input's dtype (", input.scalar_type(), "), got ",
                w.scalar_type());
    TORCH_CHECK(w.device() == input.device(), "fusedloss.", op,
                ": weight must be on the device of input (", input.device(), "), got ", w.device());
  }
  return p;
}

int64_t row_count(const Tensor& input, int64_t class_dim) {
  int64_t rows = 1;
  for (int64_t d = 0; d < input.dim(); ++d) {
    if (d != class_dim) rows *= input.size(d);
  }
  return rows;
}

// (R, C) contiguous rows of a tensor with the input's layout.
Tensor as_rows(const Tensor& t, int64_t class_dim, int64_t rows, int64_t classes) {
  Tensor v = class_dim == 0 ? t.unsqueeze(0) : t;
  if (v.dim() > 2) v = v.movedim(1, -1);
  return v.reshape({rows, classes}).contiguous();
}

// The inverse of as_rows for a fresh (R, C) tensor: a view with the input's shape.
Tensor from_rows(const Tensor& rows, const Tensor& input, int64_t class_dim) {
  if (class_dim == 0) return rows.view({input.size(0)});
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.erase(shape.begin() + 1);
  shape.push_back(input.size(1));
  return rows.view(shape).movedim(-1, 1);
}

using CrossEntropyEngine = void (*)(const CrossEntropySpec&, const CrossEntropyOperands&);

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> cross_entropy_on_device(
    CrossEntropyEngine engine, const Tensor& input, const Tensor& target,
    const OptionalTensor& weight, int64_t ignore_index, c10::string_view reduction_name,
    double label_smoothing, double z_loss, std::optional<double> softcap, bool check_target,
    bool compute_grad, bool compute_target_grad, bool mean_in_grad) {
  constexpr c10::string_view op = "cross_entropy";
  const auto reduction = parse_reduction(op, reduction_name);
  check_cross_entropy_options("cross_entropy", label_smoothing, z_loss, softcap);
  const ClassProblem problem =
      check_class_problem(op, input, target, weight, ignore_index, /*allow_probabilities=*/true);
  TORCH_CHECK(!compute_target_grad || (problem.probability_targets && compute_grad),
              "fusedloss._cross_entropy_forward: a target gradient exists only for probability "
              "targets, and is computed with the input gradient");

  CrossEntropySpec spec;
  spec.num_classes = input.size(problem.class_dim);
  spec.ignore_index = ignore_index;
  spec.label_smoothing = label_smoothing;
  spec.z_loss = z_loss;
  spec.softcap = softcap.value_or(0);
  spec.probability_targets = problem.probability_targets;

  const auto dtype = problem.probability_targets
                         ? c10::promoteTypes(input.scalar_type(), target.scalar_type())
                         : input.scalar_type();
  const auto acc_options = input.options().dtype(accumulation_dtype(dtype));
  const int64_t rows = row_count(input, problem.class_dim), C = spec.num_classes;

  CrossEntropyOperands o;
  o.logits = as_rows(input.to(dtype), problem.class_dim, rows, C);
  if (weight.has_value()) o.weight = weight->to(dtype).contiguous();

  // Denominators of 'mean': the summed weights of the non-ignored targets (cross entropy) and
  // their count (z-loss); the number of rows for probability targets.
  MeanDenominators d;
  if (problem.probability_targets) {
    o.target = as_rows(target.to(dtype), problem.class_dim, rows, C);
    d.total_weight = at::full({}, static_cast<double>(rows), acc_options);
    d.valid_count = d.total_weight;
  } else {
    o.target = checked_class_targets(op, target, C, ignore_index, check_target);
    if (reduction == at::Reduction::Mean) {
      d = class_index_denominators(o.target, weight, C, ignore_index, accumulation_dtype(dtype));
    }
  }
  const bool mean = reduction == at::Reduction::Mean;
  o.grad_scales = row_grad_scales(reduction, mean_in_grad, d, acc_options);
  o.row_loss = at::empty({rows}, acc_options);
  if (z_loss != 0) o.row_z_loss = at::empty({rows}, acc_options);
  const auto options = input.options().dtype(dtype);
  if (compute_grad) o.grad_input = cpu::empty_gradient({rows, C}, options);
  if (compute_target_grad) o.grad_target = cpu::empty_gradient({rows, C}, options);
  if (rows > 0) engine(spec, o);

  auto [loss, z] = reduce_rows(o.row_loss, o.row_z_loss, reduction, d,
                               C10_AS_INTARRAYREF_SLOW(problem.loss_shape), dtype);
  const auto empty = [&] { return at::empty({0}, options); };
  Tensor divisor = mean && !mean_in_grad ? d.total_weight : at::ones({}, acc_options);
  return {loss, z, compute_grad ? from_rows(o.grad_input, input, problem.class_dim) : empty(),
          compute_target_grad ? from_rows(o.grad_target, input, problem.class_dim) : empty(),
          divisor};
}

template <CrossEntropyEngine engine>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> cross_entropy_forward_impl(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight, int64_t ignore_index,
    c10::string_view reduction, double label_smoothing, double z_loss,
    std::optional<double> softcap, bool check_target, bool compute_grad, bool compute_target_grad,
    bool mean_in_grad) {
  return cross_entropy_on_device(engine, input, target, weight, ignore_index, reduction,
                                 label_smoothing, z_loss, softcap, check_target, compute_grad,
                                 compute_target_grad, mean_in_grad);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> cross_entropy_forward_meta(
    const Tensor& input, const Tensor& target, const OptionalTensor& weight, int64_t ignore_index,
    c10::string_view reduction_name, double label_smoothing, double z_loss,
    std::optional<double> softcap, bool check_target, bool compute_grad, bool compute_target_grad,
    bool mean_in_grad) {
  const auto reduction = parse_reduction("cross_entropy", reduction_name);
  check_cross_entropy_options("cross_entropy", label_smoothing, z_loss, softcap);
  const ClassProblem problem =
      check_class_problem("cross_entropy", input, target, weight, ignore_index, true);
  const auto dtype = problem.probability_targets
                         ? c10::promoteTypes(input.scalar_type(), target.scalar_type())
                         : input.scalar_type();
  const auto options = input.options().dtype(dtype);
  const auto loss = [&] {
    return reduction == at::Reduction::None ? at::empty_symint(problem.loss_shape, options)
                                            : at::empty({}, options);
  };
  // The layout from_rows gives: classes innermost, viewed back to the input's shape.
  const auto grad = [&](bool wanted) {
    if (!wanted) return at::empty({0}, options);
    if (input.dim() <= 2) return at::empty_symint(input.sym_sizes(), options);
    c10::SymDimVector rows_shape(problem.loss_shape);
    rows_shape.push_back(input.sym_size(1));
    return at::empty_symint(rows_shape, options).movedim(-1, 1);
  };
  return {loss(), loss(), grad(compute_grad), grad(compute_target_grad),
          at::empty({}, options.dtype(accumulation_dtype(dtype)))};
}

// --- nll_loss: a gather of the given log-probabilities, written with ATen ops after our own
// target check; autograd differentiates it (its gradient is one scatter).

std::tuple<Tensor, Tensor> class_targets_on_device(const Tensor& target,
                                                   const OptionalTensor& weight,
                                                   int64_t num_classes, int64_t ignore_index,
                                                   bool check_target, c10::string_view op,
                                                   at::ScalarType dtype) {
  const Tensor t = checked_class_targets(op, target, num_classes, ignore_index, check_target);
  const Tensor row_weight = class_target_weights(t, weight, num_classes, ignore_index, dtype);
  const Tensor safe = num_classes > 0 ? t.clamp(0, num_classes - 1) : t.clamp(0, 0);
  return {row_weight.view(target.sizes()), safe.view(target.sizes())};
}

std::tuple<Tensor, Tensor> class_targets_meta(const Tensor& target, const OptionalTensor& weight,
                                              int64_t num_classes, int64_t ignore_index,
                                              bool check_target, c10::string_view op,
                                              at::ScalarType dtype) {
  return {at::empty_symint(target.sym_sizes(), target.options().dtype(dtype)),
          at::empty_symint(target.sym_sizes(), target.options().dtype(at::kLong))};
}

Tensor nll_loss(const Tensor& input, const Tensor& target, const OptionalTensor& weight,
                int64_t ignore_index, c10::string_view reduction_name, bool check_target) {
  const auto reduction = parse_reduction("nll_loss", reduction_name);
  const ClassProblem problem = check_class_problem("nll_loss", input, target, weight, ignore_index,
                                                   /*allow_probabilities=*/false);
  static auto class_targets = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("fusedloss::_class_target_weights", "")
                                  .typed<decltype(class_targets_on_device)>();
  const auto [row_weight, safe_target] = class_targets.call(
      target, weight, input.sym_size(problem.class_dim).guard_int(__FILE__, __LINE__), ignore_index,
      check_target, "nll_loss", input.scalar_type());
  const Tensor picked = problem.class_dim == 0
                            ? input.gather(0, safe_target.unsqueeze(0)).squeeze(0)
                            : input.gather(1, safe_target.unsqueeze(1)).squeeze(1);
  // Ignored rows give 0 even where the input is not finite (0 * inf would be NaN).
  const Tensor loss =
      at::where(row_weight.eq(0), at::zeros({}, input.options()), picked.neg().mul(row_weight));
  if (reduction == at::Reduction::None) return loss;
  if (reduction == at::Reduction::Sum) return loss.sum();
  return loss.sum().div(row_weight.sum());  // 0 / 0 = NaN when every target is ignored, as torch
}

// --- multi_margin_loss

// Checks the arguments; returns the number of rows (N, or 1 for an input (C)).
c10::SymInt check_margin_problem(const Tensor& input, const Tensor& target, int64_t p,
                                 double margin, const OptionalTensor& weight) {
  constexpr const char* op = "multi_margin_loss";
  TORCH_CHECK_VALUE(p == 1 || p == 2, "fusedloss.", op,
                    ": only p == 1 and p == 2 are supported, got ", p);
  TORCH_CHECK_VALUE(!std::isnan(margin), "fusedloss.", op, ": margin is NaN");
  TORCH_CHECK((input.dim() == 1 || input.dim() == 2) && input.sym_size(-1) != 0, "fusedloss.", op,
              ": expected input (C) or (N, C) with C > 0 (N may be 0), got shape ",
              input.sym_sizes());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(input.scalar_type()), "fusedloss.", op,
                              ": input must be float32, float64, float16 or bfloat16, got ",
                              input.scalar_type());
  TORCH_CHECK(input.device() == target.device(), "fusedloss.", op,
              ": input and target must be on the same device, got input on ", input.device(),
              " and target on ", target.device());
  TORCH_CHECK(target.scalar_type() == at::kLong, "fusedloss.", op,
              ": target must be int64 class indices, got ", target.scalar_type());
  const c10::SymInt rows = input.dim() == 1 ? c10::SymInt(1) : input.sym_size(0);
  const c10::SymInt& classes = input.sym_size(-1);
  TORCH_CHECK(target.dim() <= 1 && target.sym_numel() == rows, "fusedloss.", op,
              ": target must hold one class per row of input (", rows, "), got shape ",
              target.sym_sizes());
  if (weight.has_value()) {
    TORCH_CHECK(weight->dim() == 1 && weight->sym_numel() == classes, "fusedloss.", op,
                ": weight must be a 1-D tensor with one value per class (", classes,
                "), got shape ", weight->sym_sizes());
    TORCH_CHECK(weight->scalar_type() == input.scalar_type(), "fusedloss.", op,
                ": weight must have the input's dtype (", input.scalar_type(), "), got ",
                weight->scalar_type());
    TORCH_CHECK(weight->device() == input.device(), "fusedloss.", op,
                ": weight must be on the device of input (", input.device(), "), got ",
                weight->device());
  }
  return rows;
}

using MultiMarginEngine = void (*)(const MultiMarginSpec&, const MultiMarginOperands&);

// Returns (loss, grad_input, grad_divisor): backward divides grad_output by grad_divisor (the
// row count for a 'mean' whose 1/N is not folded into grad_input, else 1).
template <MultiMarginEngine engine>
std::tuple<Tensor, Tensor, Tensor> multi_margin_on_device(const Tensor& input, const Tensor& target,
                                                          const OptionalTensor& weight, int64_t p,
                                                          double margin,
                                                          c10::string_view reduction_name,
                                                          bool compute_grad, bool mean_in_grad) {
  const auto reduction = parse_reduction("multi_margin_loss", reduction_name);
  check_margin_problem(input, target, p, margin, weight);
  const int64_t rows = input.dim() == 1 ? 1 : input.size(0), classes = input.size(-1);
  MultiMarginOperands o;
  o.input = input.reshape({rows, classes}).contiguous();
  // The target is always checked (a synchronization on CUDA): torch's CPU kernel raises here
  // too, its CUDA kernel asserts on the device.
  o.target = target.reshape({-1}).contiguous();
  const Tensor bad = o.target.lt(0).logical_or_(o.target.ge(classes));
  if (bad.any().item<bool>()) {
    const int64_t at = first_true_position(bad);
    TORCH_CHECK(false, "fusedloss.multi_margin_loss: target ", o.target[at].item<int64_t>(),
                " is out of range: expected a class in [0, ", classes, "); found at position ", at);
  }
  if (weight.has_value()) o.weight = weight->contiguous();
  const auto acc_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  o.row_loss = at::empty({rows}, acc_options);
  if (compute_grad) o.grad_input = cpu::empty_gradient({rows, classes}, input.options());
  const bool mean = reduction == at::Reduction::Mean && rows > 0;
  if (mean && mean_in_grad) o.grad_scale = 1.0 / static_cast<double>(rows);
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
  return {loss, compute_grad ? o.grad_input.view(input.sizes()) : at::empty({0}, input.options()),
          at::full({}, mean && !mean_in_grad ? static_cast<double>(rows) : 1.0, acc_options)};
}

std::tuple<Tensor, Tensor, Tensor> multi_margin_meta(const Tensor& input, const Tensor& target,
                                                     const OptionalTensor& weight, int64_t p,
                                                     double margin, c10::string_view reduction_name,
                                                     bool compute_grad, bool /*mean_in_grad*/) {
  const auto reduction = parse_reduction("multi_margin_loss", reduction_name);
  check_margin_problem(input, target, p, margin, weight);
  return {reduction == at::Reduction::None ? at::empty_symint(target.sym_sizes(), input.options())
                                           : at::empty({}, input.options()),
          compute_grad ? at::empty_symint(input.sym_sizes(), input.options())
                       : at::empty({0}, input.options()),
          at::empty({}, input.options().dtype(accumulation_dtype(input.scalar_type())))};
}

// The public ops below autograd: the loss alone.
std::tuple<Tensor, Tensor> cross_entropy_loss_only(const Tensor& input, const Tensor& target,
                                                   const OptionalTensor& weight,
                                                   const CrossEntropyArgs& args) {
  auto r = cross_entropy_forward(input, target, weight, args, false, false, false);
  return {r.loss, r.z_loss};
}

Tensor multi_margin_loss_only(const Tensor& input, const Tensor& target, int64_t p, double margin,
                              const OptionalTensor& weight, c10::string_view reduction) {
  return std::get<0>(
      multi_margin_loss_forward(input, target, p, margin, weight, reduction, false, false));
}

}  // namespace

CrossEntropyResult cross_entropy_forward(const Tensor& input, const Tensor& target,
                                         const OptionalTensor& weight, const CrossEntropyArgs& args,
                                         bool compute_grad, bool compute_target_grad,
                                         bool mean_in_grad) {
  check_cross_entropy_options("cross_entropy", args.label_smoothing, args.z_loss, args.softcap);
  static auto handle =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedloss::_cross_entropy_forward", "")
          .typed<decltype(cross_entropy_forward_impl<cpu::cross_entropy_kernel>)>();
  auto [loss, z, grad_input, grad_target, divisor] = handle.call(
      input, target, weight, args.ignore_index, args.reduction, args.label_smoothing, args.z_loss,
      args.softcap, args.check_target, compute_grad, compute_target_grad, mean_in_grad);
  return {loss, z, grad_input, grad_target, divisor};
}

std::tuple<Tensor, Tensor, Tensor> multi_margin_loss_forward(const Tensor& input,
                                                             const Tensor& target, int64_t p,
                                                             double margin,
                                                             const OptionalTensor& weight,
                                                             c10::string_view reduction,
                                                             bool compute_grad, bool mean_in_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_multi_margin_loss_forward", "")
                           .typed<decltype(multi_margin_meta)>();
  return handle.call(input, target, weight, p, margin, reduction, compute_grad, mean_in_grad);
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
      "nll_loss(Tensor input, Tensor target, Tensor? weight=None, int ignore_index=-100, "
      "str reduction=\"mean\", *, bool check_target=True) -> Tensor");
  m.def(
      "multi_margin_loss(Tensor input, Tensor target, int p=1, float margin=1.0, "
      "Tensor? weight=None, str reduction=\"mean\") -> Tensor");
  m.def(
      "_cross_entropy_forward(Tensor input, Tensor target, Tensor? weight, int ignore_index, "
      "str reduction, float label_smoothing, float z_loss, float? softcap, bool check_target, "
      "bool compute_grad, bool compute_target_grad, bool mean_in_grad) -> (Tensor loss, "
      "Tensor z_loss, Tensor grad_input, Tensor grad_target, Tensor grad_divisor)");
  m.def(
      "_multi_margin_loss_forward(Tensor input, Tensor target, Tensor? weight, int p, "
      "float margin, str reduction, bool compute_grad, bool mean_in_grad) "
      "-> (Tensor loss, Tensor grad_input, Tensor grad_divisor)");
  m.def(
      "_class_target_weights(Tensor target, Tensor? weight, int num_classes, int ignore_index, "
      "bool check_target, str op, ScalarType dtype) -> (Tensor row_weight, Tensor safe_target)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  FUSEDLOSS_IMPL_MULTICLASS_OPS(m, &fusedloss::ops::cross_entropy_loss_only,
                                fusedloss::ops::multi_margin_loss_only);
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeImplicitAutograd, m) {
  m.impl("nll_loss", TORCH_FN(fusedloss::ops::nll_loss));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  using namespace fusedloss;
  m.impl("_cross_entropy_forward",
         TORCH_FN(ops::cross_entropy_forward_impl<cpu::cross_entropy_kernel>));
  m.impl("_multi_margin_loss_forward",
         TORCH_FN(ops::multi_margin_on_device<cpu::multi_margin_kernel>));
  m.impl("_class_target_weights", TORCH_FN(ops::class_targets_on_device));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  using namespace fusedloss;
  m.impl("_cross_entropy_forward",
         TORCH_FN(ops::cross_entropy_forward_impl<cuda::cross_entropy_kernel>));
  m.impl("_multi_margin_loss_forward",
         TORCH_FN(ops::multi_margin_on_device<cuda::multi_margin_kernel>));
  m.impl("_class_target_weights", TORCH_FN(ops::class_targets_on_device));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  using namespace fusedloss;
  m.impl("_cross_entropy_forward", TORCH_FN(ops::cross_entropy_forward_meta));
  m.impl("_multi_margin_loss_forward", TORCH_FN(ops::multi_margin_meta));
  m.impl("_class_target_weights", TORCH_FN(ops::class_targets_meta));
}
