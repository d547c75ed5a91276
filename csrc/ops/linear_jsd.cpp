// Operator layer of linear_jsd (distillation from hidden states): the generalized Jensen-Shannon
// divergence (beta = 0: forward KL, 1: reverse KL; kernels/jensen_shannon.h) between
// softmax((input @ linear_weight.T + linear_bias) / T), the student, and the teacher's softmax of
// teacher_input @ teacher_weight.T + teacher_bias (or of teacher_input itself, logits, when
// teacher_weight is None), without ever holding (N, V) logits. Rows go chunk by chunk
// (ops/linear_head.h): the chunk's student and teacher logits come from matmuls, the JSD row
// engine turns the student's in place into their gradient, which feeds the input and weight
// matmuls at once. Only the student takes gradients. linear_kl_div is beta = 0.
// Autograd: autograd/linear_jsd.cpp.

#include "ops/linear_jsd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/linear_head.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;
constexpr c10::string_view kOp = "linear_jsd";

void check_bias(const char* name, const OptionalTensor& bias, const c10::SymInt& vocab,
                const Tensor& like) {
  if (!bias.has_value()) return;
  TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == vocab, "fusedloss.", kOp, ": ", name,
              " must have shape [", vocab, "] (one value per class), got shape ",
              bias->sym_sizes());
  TORCH_CHECK(bias->scalar_type() == like.scalar_type() && bias->device() == like.device(),
              "fusedloss.", kOp, ": ", name, " must have its weight's dtype and device (",
              like.scalar_type(), ", ", like.device(), "), got ", bias->scalar_type(), ", ",
              bias->device());
}

// Checks everything; returns the reduction.
at::Reduction::Reduction check_problem(const Tensor& input, const Tensor& linear_weight,
                                       const Tensor& teacher_input,
                                       const OptionalTensor& teacher_weight,
                                       const OptionalTensor& labels,
                                       const OptionalTensor& linear_bias,
                                       const OptionalTensor& teacher_bias, double beta,
                                       double temperature, c10::string_view reduction,
                                       std::optional<int64_t> chunk_size) {
  const auto r = parse_reduction(kOp, reduction);
  TORCH_CHECK_VALUE(beta >= 0 && beta <= 1, "fusedloss.", kOp,
                    ": beta must be in [0, 1] (0: forward KL, 1: reverse KL), got ", beta);
  TORCH_CHECK_VALUE(temperature > 0 && std::isfinite(temperature), "fusedloss.", kOp,
                    ": temperature must be positive and finite, got ", temperature);
  TORCH_CHECK_VALUE(!chunk_size.has_value() || *chunk_size > 0, "fusedloss.", kOp,
                    ": chunk_size must be positive (or None), got ", chunk_size.value_or(0));
  TORCH_CHECK(input.dim() >= 1 && linear_weight.dim() == 2 &&
                  linear_weight.sym_size(1) == input.sym_size(-1),
              "fusedloss.", kOp, ": input (..., H) and linear_weight (V, H) do not fit: shapes ",
              input.sym_sizes(), " and ", linear_weight.sym_sizes());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(input.scalar_type()), "fusedloss.", kOp,
                              ": input must be float32, float64, float16 or bfloat16, got ",
                              input.scalar_type());
  TORCH_CHECK(linear_weight.scalar_type() == input.scalar_type(), "fusedloss.", kOp,
              ": linear_weight must have the input's dtype (", input.scalar_type(), "), got ",
              linear_weight.scalar_type());
  const auto leading = input.sym_sizes().slice(0, input.dim() - 1);
  const c10::SymInt& vocab = linear_weight.sym_size(0);
  for (const Tensor* t : {&linear_weight, &teacher_input}) {
    TORCH_CHECK(t->device() == input.device(), "fusedloss.", kOp,
                ": every tensor must be on the input's device ", input.device(), ", got ",
                t->device());
  }
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(teacher_input.scalar_type()), "fusedloss.", kOp,
                              ": teacher_input must be float32, float64, float16 or bfloat16, "
                              "got ", teacher_input.scalar_type());
  TORCH_CHECK(teacher_input.dim() == input.dim() &&
                  teacher_input.sym_sizes().slice(0, input.dim() - 1) == leading,
              "fusedloss.", kOp, ": teacher_input must have the input's leading shape ", leading,
              ", got shape ", teacher_input.sym_sizes());
  if (teacher_weight.has_value()) {
    TORCH_CHECK(teacher_weight->dim() == 2 && teacher_weight->sym_size(0) == vocab &&
                    teacher_weight->sym_size(1) == teacher_input.sym_size(-1),
                "fusedloss.", kOp, ": teacher_weight must be (V, H_teacher) = (", vocab, ", ",
                teacher_input.sym_size(-1), "), got shape ", teacher_weight->sym_sizes());
    TORCH_CHECK(teacher_weight->scalar_type() == teacher_input.scalar_type() &&
                    teacher_weight->device() == input.device(),
                "fusedloss.", kOp, ": teacher_weight must have teacher_input's dtype (",
                teacher_input.scalar_type(), ") and the input's device, got ",
                teacher_weight->scalar_type(), " on ", teacher_weight->device());
    check_bias("teacher_bias", teacher_bias, vocab, *teacher_weight);
  } else {
    TORCH_CHECK(teacher_input.sym_size(-1) == vocab, "fusedloss.", kOp,
                ": without teacher_weight, teacher_input holds the teacher's logits and its last "
                "dimension must be V = ",
                vocab, ", got shape ", teacher_input.sym_sizes());
    TORCH_CHECK(!teacher_bias.has_value(), "fusedloss.", kOp,
                ": teacher_bias needs teacher_weight");
  }
  check_bias("linear_bias", linear_bias, vocab, linear_weight);
  if (labels.has_value()) {
    TORCH_CHECK(labels->scalar_type() == at::kLong && labels->sym_sizes() == leading &&
                    labels->device() == input.device(),
                "fusedloss.", kOp, ": labels must be int64 of the input's leading shape ", leading,
                " on its device, got ", labels->scalar_type(), " of shape ", labels->sym_sizes(),
                " on ", labels->device());
  }
  return r;
}

using JsdEngine = void (*)(const JsdSpec&, const JsdOperands&);

template <JsdEngine engine>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_on_device(
    const Tensor& input, const Tensor& linear_weight, const Tensor& teacher_input,
    const OptionalTensor& teacher_weight, const OptionalTensor& labels,
    const OptionalTensor& linear_bias, const OptionalTensor& teacher_bias, double beta,
    double temperature, int64_t ignore_index, c10::string_view reduction_name,
    std::optional<int64_t> chunk_size, const OptionalTensor& row_grad_scale, bool grad_input,
    bool grad_weight, bool grad_bias) {
  const auto reduction =
      check_problem(input, linear_weight, teacher_input, teacher_weight, labels, linear_bias,
                    teacher_bias, beta, temperature, reduction_name, chunk_size);
  TORCH_CHECK(!grad_bias || linear_bias.has_value(), "fusedloss._linear_jsd: grad_bias without "
              "a bias");
  const int64_t hidden = input.size(-1), vocab = linear_weight.size(0);
  const auto leading = input.sizes().slice(0, input.dim() - 1);
  const int64_t rows = c10::multiply_integers(leading);
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  const auto acc_options = input.options().dtype(acc_dtype);
  const Tensor x = input.reshape({rows, hidden});
  const Tensor teacher = teacher_input.reshape({rows, teacher_input.size(-1)});
  const OptionalTensor teacher_w_t =
      teacher_weight.has_value() ? OptionalTensor(teacher_weight->t()) : std::nullopt;
  const Tensor flat_labels = labels.has_value() ? labels->reshape({rows}).contiguous() : Tensor();
  const Tensor row_loss = at::empty({rows}, acc_options);
  const Tensor scale_rows =
      row_grad_scale.has_value() ? row_grad_scale->reshape({rows}).to(dtype) : Tensor();
  HeadGradients grads(rows, hidden, vocab, input.options(), grad_input, grad_weight, grad_bias);
  const bool any_grad = grad_input || grad_weight || grad_bias;
  const int64_t chunk = std::min<int64_t>(
      std::max<int64_t>(rows, 1),
      chunk_size.value_or(default_chunk_rows(rows, vocab, dtype, input.device())));
  const Tensor w_t = linear_weight.t();
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t len = std::min(chunk, rows - start);
    const Tensor xc = x.narrow(0, start, len);
    JsdOperands o;  // fresh per chunk: no chunk's logits outlive it
    o.student = chunk_logits(xc, w_t, linear_bias);
    o.teacher = teacher_w_t.has_value()
                    ? chunk_logits(teacher.narrow(0, start, len), *teacher_w_t, teacher_bias)
                          .to(dtype)
                    : teacher.narrow(0, start, len).to(dtype).contiguous();
    if (flat_labels.defined()) o.labels = flat_labels.narrow(0, start, len);
    o.row_loss = row_loss.narrow(0, start, len);
    if (any_grad) o.grad_input = o.student;  // overwritten in place with its gradient
    engine({beta, temperature, ignore_index}, o);
    if (!any_grad) continue;
    const Tensor& g = o.student;
    if (scale_rows.defined()) g.mul_(scale_rows.narrow(0, start, len).unsqueeze(1));
    grads.add_chunk(g, xc, linear_weight, start);
  }
  // 'mean': over the rows not ignored (all rows without labels); 0 of them gives NaN, as torch.
  Tensor loss, scale;
  if (reduction == at::Reduction::None) {
    loss = row_loss.view(leading).to(dtype);
    scale = at::empty({0}, acc_options);
  } else {
    const Tensor total = row_loss.sum(at::kDouble);
    Tensor counted = at::full({}, static_cast<double>(rows), acc_options.dtype(at::kDouble));
    if (flat_labels.defined()) counted = flat_labels.ne(ignore_index).sum(at::kDouble);
    const bool mean = reduction == at::Reduction::Mean;
    loss = (mean ? total.div(counted) : total).to(dtype);
    scale = mean ? counted.reciprocal().to(acc_dtype) : at::full({}, 1.0, acc_options);
  }
  return {loss, grad_input ? grads.input().view(input.sizes()) : grads.input(), grads.weight(),
          grads.bias(), scale};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> forward_meta(
    const Tensor& input, const Tensor& linear_weight, const Tensor& teacher_input,
    const OptionalTensor& teacher_weight, const OptionalTensor& labels,
    const OptionalTensor& linear_bias, const OptionalTensor& teacher_bias, double beta,
    double temperature, int64_t /*ignore_index*/, c10::string_view reduction_name,
    std::optional<int64_t> chunk_size, const OptionalTensor& /*row_grad_scale*/, bool grad_input,
    bool grad_weight, bool grad_bias) {
  const auto reduction =
      check_problem(input, linear_weight, teacher_input, teacher_weight, labels, linear_bias,
                    teacher_bias, beta, temperature, reduction_name, chunk_size);
  const auto options = input.options();
  const auto acc_options = options.dtype(accumulation_dtype(input.scalar_type()));
  const bool none = reduction == at::Reduction::None;
  const auto like = [&](bool wanted, const Tensor& t) {
    return wanted ? at::empty_symint(t.sym_sizes(), options) : at::empty({0}, options);
  };
  return {none ? at::empty_symint(input.sym_sizes().slice(0, input.dim() - 1), options)
               : at::empty({}, options),
          like(grad_input, input), like(grad_weight, linear_weight),
          grad_bias ? like(true, *linear_bias) : at::empty({0}, options),
          none ? at::empty({0}, acc_options) : at::empty({}, acc_options)};
}

Tensor loss_only(const Tensor& input, const Tensor& linear_weight, const Tensor& teacher_input,
                 const OptionalTensor& teacher_weight, const OptionalTensor& labels,
                 const OptionalTensor& linear_bias, const OptionalTensor& teacher_bias,
                 double beta, double temperature, int64_t ignore_index,
                 c10::string_view reduction, std::optional<int64_t> chunk_size) {
  return std::get<0>(linear_jsd_forward(input, linear_weight, teacher_input, teacher_weight,
                                        labels, linear_bias, teacher_bias,
                                        {beta, temperature, ignore_index, reduction, chunk_size},
                                        std::nullopt, false, false, false));
}

// Forward KL(teacher || student), the usual distillation loss: linear_jsd with beta = 0.
Tensor linear_kl_div(const Tensor& input, const Tensor& linear_weight, const Tensor& teacher_input,
                     const OptionalTensor& teacher_weight, const OptionalTensor& labels,
                     const OptionalTensor& linear_bias, const OptionalTensor& teacher_bias,
                     double temperature, int64_t ignore_index, c10::string_view reduction,
                     std::optional<int64_t> chunk_size) {
  static const auto handle =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedloss::linear_jsd", "")
          .typed<decltype(loss_only)>();
  return handle.call(input, linear_weight, teacher_input, teacher_weight, labels, linear_bias,
                     teacher_bias, 0.0, temperature, ignore_index, reduction, chunk_size);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> linear_jsd_forward(
    const Tensor& input, const Tensor& linear_weight, const Tensor& teacher_input,
    const OptionalTensor& teacher_weight, const OptionalTensor& labels,
    const OptionalTensor& linear_bias, const OptionalTensor& teacher_bias,
    const LinearJsdArgs& args, const OptionalTensor& row_grad_scale, bool grad_input,
    bool grad_weight, bool grad_bias) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_linear_jsd", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(input, linear_weight, teacher_input, teacher_weight, labels, linear_bias,
                     teacher_bias, args.beta, args.temperature, args.ignore_index, args.reduction,
                     args.chunk_size, row_grad_scale, grad_input, grad_weight, grad_bias);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "linear_jsd(Tensor input, Tensor linear_weight, Tensor teacher_input, "
      "Tensor? teacher_weight=None, Tensor? labels=None, Tensor? linear_bias=None, "
      "Tensor? teacher_bias=None, *, float beta=0.5, float temperature=1.0, "
      "int ignore_index=-100, str reduction=\"mean\", int? chunk_size=None) -> Tensor");
  m.def(
      "linear_kl_div(Tensor input, Tensor linear_weight, Tensor teacher_input, "
      "Tensor? teacher_weight=None, Tensor? labels=None, Tensor? linear_bias=None, "
      "Tensor? teacher_bias=None, *, float temperature=1.0, int ignore_index=-100, "
      "str reduction=\"mean\", int? chunk_size=None) -> Tensor");
  m.def(
      "_linear_jsd(Tensor input, Tensor linear_weight, Tensor teacher_input, "
      "Tensor? teacher_weight, Tensor? labels, Tensor? linear_bias, Tensor? teacher_bias, "
      "float beta, float temperature, int ignore_index, str reduction, int? chunk_size, "
      "Tensor? row_grad_scale, bool grad_input, bool grad_weight, bool grad_bias) "
      "-> (Tensor loss, Tensor grad_input, Tensor grad_linear_weight, Tensor grad_linear_bias, "
      "Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("linear_jsd", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeImplicitAutograd, m) {
  m.impl("linear_kl_div", TORCH_FN(fusedloss::ops::linear_kl_div));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_linear_jsd",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::jensen_shannon_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_linear_jsd",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::jensen_shannon_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_linear_jsd", TORCH_FN(fusedloss::ops::forward_meta));
}
