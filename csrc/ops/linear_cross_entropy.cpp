// Operator layer of linear_cross_entropy: cross_entropy(input @ linear_weight.T + linear_bias,
// target) without ever holding the (N, V) logits. Tokens are processed in chunks of rows; for each
// chunk the logits come from a matmul (at::mm: MKL/oneDNN on the CPU, cuBLAS on CUDA), the row
// engine turns them in place into loss and d(loss)/d(logits), and that chunk's contribution to
// the input, weight and bias gradients is taken right away. Peak extra memory: one chunk of
// logits. For float16/bfloat16 the weight and bias gradients accumulate across chunks in float32.
//
// With reduction 'mean' or 'sum' the gradients are computed in the forward (backward scales them
// by grad_output); with 'none' they depend on a per-row grad_output, so backward runs the chunks
// again with row_grad_scale.

#include "ops/linear_cross_entropy.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

#include "engines/row_engines.h"
#include "ops/cross_entropy_common.h"
#include "ops/linear_head.h"

namespace fusedloss {
namespace ops {
namespace {

constexpr c10::string_view kOp = "linear_cross_entropy";

// What check_problem finds: torch's layout of linear_weight (V, d1..dK, H) and the target's kind.
struct LinearProblem {
  c10::SymDimVector out_features;  // d1..dK (empty: one class dimension)
  bool probability_targets = false;
  c10::SymDimVector loss_shape;  // per row: the input's leading dimensions, then d1..dK
};

// Checks shapes, dtypes and devices (torch's rules: logits (*leading, V, d1..dK); class-index
// targets (*leading, d1..dK), probability targets of the logits' shape).
LinearProblem check_problem(const Tensor& input, const Tensor& linear_weight, const Tensor& target,
                            const OptionalTensor& linear_bias, const OptionalTensor& weight) {
  TORCH_CHECK(input.dim() >= 1, "fusedloss.", kOp,
              ": input must be (N, H) or (B, T, H) (any leading dimensions), got a 0-d tensor");
  TORCH_CHECK(linear_weight.dim() >= 2, "fusedloss.", kOp,
              ": linear_weight must be (V, H), or (V, d1, ..., dK, H) for K more class-like "
              "dimensions, got shape ",
              linear_weight.sym_sizes());
  const c10::SymInt& hidden = input.sym_size(-1);
  const c10::SymInt& vocab = linear_weight.sym_size(0);
  LinearProblem p;
  const auto out_features = linear_weight.sym_sizes().slice(1, linear_weight.dim() - 2);
  p.out_features.assign(out_features.begin(), out_features.end());
  TORCH_CHECK(linear_weight.sym_size(-1) == hidden, "fusedloss.", kOp, ": linear_weight of shape ",
              linear_weight.sym_sizes(), " does not fit input of shape ", input.sym_sizes(),
              " (its last dimension must be H = ", hidden, ")");
  TORCH_CHECK(out_features.empty() || input.dim() >= 2, "fusedloss.", kOp,
              ": K-dimensional loss defined by linear_weight shape ", linear_weight.sym_sizes(),
              " requires batched input, (N, ", hidden, "), got unbatched input with shape ",
              input.sym_sizes());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(input.scalar_type()), "fusedloss.", kOp,
                              ": input must be float32, float64, float16 or bfloat16, got ",
                              input.scalar_type());
  TORCH_CHECK(linear_weight.scalar_type() == input.scalar_type(), "fusedloss.", kOp,
              ": linear_weight must have the input's dtype (", input.scalar_type(), "), got ",
              linear_weight.scalar_type());
  const auto leading = input.sym_sizes().slice(0, input.dim() - 1);
  c10::SymDimVector index_shape(leading.begin(), leading.end());
  index_shape.append(p.out_features.begin(), p.out_features.end());
  c10::SymDimVector logits_shape(leading.begin(), leading.end());
  logits_shape.push_back(vocab);
  logits_shape.append(p.out_features.begin(), p.out_features.end());
  p.probability_targets = target.sym_sizes() == c10::SymIntArrayRef(logits_shape);
  p.loss_shape = index_shape;
  if (p.probability_targets) {
    TORCH_CHECK(at::isFloatingType(target.scalar_type()), "fusedloss.", kOp,
                ": a target of the logits' shape ", target.sym_sizes(),
                " holds class probabilities and must be floating point, got ",
                target.scalar_type());
  } else {
    TORCH_CHECK(target.scalar_type() == at::kLong || target.scalar_type() == at::kByte,
                "fusedloss.", kOp, ": target must hold int64 (or uint8) class indices, got ",
                target.scalar_type());
    TORCH_CHECK(target.sym_sizes() == c10::SymIntArrayRef(index_shape), "fusedloss.", kOp,
                ": target of shape ", target.sym_sizes(), " does not match input of shape ",
                input.sym_sizes(), " and linear_weight of shape ", linear_weight.sym_sizes(),
                "; expected class indices of shape ", c10::SymIntArrayRef(index_shape),
                " or probabilities of shape ", c10::SymIntArrayRef(logits_shape));
  }
  for (const auto& [name, tensor] :
       {std::pair{"target", &target}, {"linear_weight", &linear_weight}}) {
    TORCH_CHECK(tensor->device() == input.device(), "fusedloss.", kOp, ": ", name,
                " must be on the device of input (", input.device(), "), got ", tensor->device());
  }
  c10::SymDimVector bias_shape{vocab};
  bias_shape.append(p.out_features.begin(), p.out_features.end());
  for (const auto& [name, tensor] : {std::pair{"linear_bias", &linear_bias}, {"weight", &weight}}) {
    if (!tensor->has_value()) continue;
    const Tensor& t = **tensor;
    const bool is_bias = tensor == &linear_bias;
    const c10::SymIntArrayRef expected =
        is_bias ? c10::SymIntArrayRef(bias_shape) : c10::SymIntArrayRef(bias_shape).slice(0, 1);
    TORCH_CHECK(t.sym_sizes() == expected, "fusedloss.", kOp, ": ", name, " must have shape ",
                expected, is_bias ? " (the classes, then linear_weight's out_features)"
                                  : " (one value per class)",
                ", got shape ", t.sym_sizes());
    TORCH_CHECK(t.scalar_type() == input.scalar_type(), "fusedloss.", kOp, ": ", name,
                " must have the input's dtype (", input.scalar_type(), "), got ", t.scalar_type());
    TORCH_CHECK(t.device() == input.device(), "fusedloss.", kOp, ": ", name,
                " must be on the device of input (", input.device(), "), got ", t.device());
  }
  return p;
}

// linear_weight (V, d1..dK, H) as (D V, H) with row d V + v, so that a row of input gives D rows
// of V logits, each contiguous (a copy when K > 0); a bias likewise as (D V).
Tensor classes_last(const Tensor& t, int64_t out_dims, at::IntArrayRef trailing) {
  if (out_dims == 0) return t;
  std::vector<int64_t> shape{-1};
  shape.insert(shape.end(), trailing.begin(), trailing.end());
  return t.movedim(0, out_dims).reshape(shape);
}

// The inverse of classes_last for a gradient laid out (D V, ...): back to (V, d1..dK, ...).
Tensor classes_first(const Tensor& t, at::IntArrayRef out_features, int64_t vocab) {
  if (out_features.empty()) return t;
  std::vector<int64_t> shape(out_features.begin(), out_features.end());
  shape.push_back(vocab);
  for (int64_t i = 1; i < t.dim(); ++i) shape.push_back(t.size(i));
  return t.view(shape).movedim(static_cast<int64_t>(out_features.size()), 0).contiguous();
}

using CrossEntropyEngine = void (*)(const CrossEntropySpec&, const CrossEntropyOperands&);

template <CrossEntropyEngine engine>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> forward_on_device(
    const Tensor& input, const Tensor& linear_weight, const Tensor& target,
    const OptionalTensor& linear_bias, const OptionalTensor& weight, int64_t ignore_index,
    c10::string_view reduction_name, double label_smoothing, double z_loss,
    std::optional<double> softcap, std::optional<int64_t> chunk_size, bool check_target,
    const OptionalTensor& row_grad_scale, bool grad_input, bool grad_weight, bool grad_bias) {
  const auto reduction = parse_reduction(kOp, reduction_name);
  check_cross_entropy_options(kOp, label_smoothing, z_loss, softcap);
  const LinearProblem p = check_problem(input, linear_weight, target, linear_bias, weight);
  TORCH_CHECK_VALUE(!chunk_size.has_value() || *chunk_size > 0, "fusedloss.", kOp,
                    ": chunk_size must be positive (or None), got ", chunk_size.value_or(0));
  TORCH_CHECK(!grad_bias || linear_bias.has_value(),
              "fusedloss._linear_cross_entropy: "
              "grad_bias without a bias");
  const auto out_features = C10_AS_INTARRAYREF_SLOW(p.out_features);
  const int64_t out_dims = static_cast<int64_t>(out_features.size());
  const int64_t per_input = c10::multiply_integers(out_features);  // D: loss rows per input row
  const int64_t hidden = input.size(-1), vocab = linear_weight.size(0);
  const int64_t input_rows = c10::multiply_integers(input.sizes().slice(0, input.dim() - 1));
  const int64_t rows = input_rows * per_input;
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  const auto acc_options = input.options().dtype(acc_dtype);
  const Tensor x = input.reshape({input_rows, hidden});
  const Tensor w = classes_last(linear_weight, out_dims, {hidden});  // (D V, H)
  const OptionalTensor b = linear_bias.has_value()
                               ? OptionalTensor(classes_last(*linear_bias, out_dims, {}))
                               : std::nullopt;
  // Targets as rows: class indices (R), or probabilities (R, V) with the classes last.
  Tensor t;
  MeanDenominators d;
  if (p.probability_targets) {
    t = target.movedim(input.dim() - 1, -1).reshape({rows, vocab}).to(dtype).contiguous();
    const Tensor n = at::full({}, static_cast<double>(rows), acc_options);
    d = {n, n};  // torch's 'mean' with probabilities: over the rows
  } else {
    t = checked_class_targets(kOp, target, vocab, ignore_index, check_target);
    if (reduction == at::Reduction::Mean) {
      d = class_index_denominators(t, weight, vocab, ignore_index, acc_dtype);
    }
  }
  const bool any_grad = grad_input || grad_weight || grad_bias;
  if (row_grad_scale.has_value()) {
    TORCH_CHECK(reduction == at::Reduction::None && row_grad_scale->numel() == rows,
                "fusedloss._linear_cross_entropy: row_grad_scale is one factor per row of a "
                "reduction='none' loss");
  }

  CrossEntropySpec spec;
  spec.num_classes = vocab;
  spec.ignore_index = ignore_index;
  spec.label_smoothing = label_smoothing;
  spec.z_loss = z_loss;
  spec.softcap = softcap.value_or(0);
  spec.probability_targets = p.probability_targets;
  CrossEntropyOperands shared;  // what every chunk's operands have in common
  if (weight.has_value()) shared.weight = weight->contiguous();
  const bool fold = folds_mean_into_gradient(dtype);
  shared.grad_scales = row_grad_scales(reduction, fold, d, acc_options);
  const Tensor row_loss = at::empty({rows}, acc_options);
  const Tensor row_z_loss = z_loss != 0 ? at::empty({rows}, acc_options) : Tensor();

  HeadGradients grads(input_rows, hidden, per_input * vocab, input.options(), grad_input,
                      grad_weight, grad_bias);

  const int64_t chunk = std::min<int64_t>(
      std::max<int64_t>(input_rows, 1),
      chunk_size.has_value()
          ? *chunk_size
          : default_chunk_rows(input_rows, per_input * vocab, dtype, input.device()));
  const Tensor w_t = w.t();
  for (int64_t start = 0; start < input_rows; start += chunk) {
    const int64_t len = std::min(chunk, input_rows - start);
    const Tensor xc = x.narrow(0, start, len);
    const Tensor logits = chunk_logits(xc, w_t, b);  // (len, D V)
    const Tensor logit_rows = logits.view({len * per_input, vocab});
    // Fresh operands per chunk: operands kept across iterations would hold the previous chunk's
    // logits alive while the next chunk's are allocated (two chunks of memory instead of one).
    CrossEntropyOperands o = shared;
    o.logits = logit_rows;
    o.target = t.narrow(0, start * per_input, len * per_input);
    o.row_loss = row_loss.narrow(0, start * per_input, len * per_input);
    if (row_z_loss.defined()) {
      o.row_z_loss = row_z_loss.narrow(0, start * per_input, len * per_input);
    }
    // The engine overwrites each logit with its gradient once it has read it.
    o.grad_input = any_grad ? logit_rows : Tensor();
    engine(spec, o);
    if (!any_grad) continue;
    if (row_grad_scale.has_value()) {
      logit_rows.mul_(row_grad_scale->reshape({rows})
                          .narrow(0, start * per_input, len * per_input)
                          .to(dtype)
                          .unsqueeze(1));
    }
    grads.add_chunk(logits, xc, w, start);
  }

  const auto loss_shape = C10_AS_INTARRAYREF_SLOW(p.loss_shape);
  auto [loss, z] = reduce_rows(row_loss, row_z_loss, reduction, d, loss_shape, dtype);
  const auto empty = [&] { return at::empty({0}, input.options()); };
  return {loss,
          z,
          grad_input ? grads.input().view(input.sizes()) : empty(),
          grad_weight ? classes_first(grads.weight(), out_features, vocab) : empty(),
          grad_bias ? classes_first(grads.bias(), out_features, vocab) : empty(),
          backward_scale(reduction, fold, d, acc_options)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> forward_meta(
    const Tensor& input, const Tensor& linear_weight, const Tensor& target,
    const OptionalTensor& linear_bias, const OptionalTensor& weight, int64_t ignore_index,
    c10::string_view reduction_name, double label_smoothing, double z_loss,
    std::optional<double> softcap, std::optional<int64_t> chunk_size, bool check_target,
    const OptionalTensor& row_grad_scale, bool grad_input, bool grad_weight, bool grad_bias) {
  const auto reduction = parse_reduction(kOp, reduction_name);
  check_cross_entropy_options(kOp, label_smoothing, z_loss, softcap);
  const LinearProblem p = check_problem(input, linear_weight, target, linear_bias, weight);
  const auto options = input.options();
  const auto loss = [&] {
    return reduction == at::Reduction::None ? at::empty_symint(p.loss_shape, options)
                                            : at::empty({}, options);
  };
  const auto like = [&](bool wanted, const Tensor& t) {
    return wanted ? at::empty_symint(t.sym_sizes(), options) : at::empty({0}, options);
  };
  return {loss(),
          loss(),
          like(grad_input, input),
          like(grad_weight, linear_weight),
          grad_bias ? like(true, *linear_bias) : at::empty({0}, options),
          at::empty(reduction == at::Reduction::None ? at::IntArrayRef{0} : at::IntArrayRef{},
                    options.dtype(accumulation_dtype(input.scalar_type())))};
}

Tensor loss_only(const Tensor& input, const Tensor& linear_weight, const Tensor& target,
                 const OptionalTensor& linear_bias, const OptionalTensor& weight,
                 int64_t ignore_index, c10::string_view reduction, double label_smoothing,
                 double z_loss, std::optional<double> softcap, std::optional<int64_t> chunk_size,
                 bool check_target) {
  return std::get<0>(linear_cross_entropy_forward(
      input, linear_weight, target, linear_bias, weight,
      {ignore_index, reduction, label_smoothing, z_loss, softcap, chunk_size, check_target},
      std::nullopt, false, false, false));
}

}  // namespace

void check_linear_cross_entropy(const Tensor& input, const Tensor& linear_weight,
                                const Tensor& target, const OptionalTensor& linear_bias,
                                const OptionalTensor& weight) {
  check_problem(input, linear_weight, target, linear_bias, weight);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> linear_cross_entropy_forward(
    const Tensor& input, const Tensor& linear_weight, const Tensor& target,
    const OptionalTensor& linear_bias, const OptionalTensor& weight,
    const LinearCrossEntropyArgs& args, const OptionalTensor& row_grad_scale, bool grad_input,
    bool grad_weight, bool grad_bias) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_linear_cross_entropy", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(input, linear_weight, target, linear_bias, weight, args.ignore_index,
                     args.reduction, args.label_smoothing, args.z_loss, args.softcap,
                     args.chunk_size, args.check_target, row_grad_scale, grad_input, grad_weight,
                     grad_bias);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "linear_cross_entropy(Tensor input, Tensor linear_weight, Tensor target, "
      "Tensor? linear_bias=None, Tensor? weight=None, int ignore_index=-100, "
      "str reduction=\"mean\", float label_smoothing=0.0, *, float z_loss=0.0, "
      "float? softcap=None, int? chunk_size=None, bool check_target=True) -> Tensor");
  m.def(
      "_linear_cross_entropy(Tensor input, Tensor linear_weight, Tensor target, "
      "Tensor? linear_bias, Tensor? weight, int ignore_index, str reduction, "
      "float label_smoothing, float z_loss, float? softcap, int? chunk_size, bool check_target, "
      "Tensor? row_grad_scale, bool grad_input, bool grad_weight, bool grad_bias) "
      "-> (Tensor loss, Tensor z_loss, Tensor grad_input, Tensor grad_linear_weight, "
      "Tensor grad_linear_bias, Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("linear_cross_entropy", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_linear_cross_entropy",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::cross_entropy_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_linear_cross_entropy",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::cross_entropy_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_linear_cross_entropy", TORCH_FN(fusedloss::ops::forward_meta));
}
