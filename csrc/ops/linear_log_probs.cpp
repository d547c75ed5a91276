// Operator layer of linear_log_probs: per-token log p(target) and entropy of
// softmax((input @ linear_weight.T + linear_bias) / temperature), without ever holding the (N, V)
// logits. Rows go chunk by chunk (ops/linear_head.h): each chunk's logits come from a matmul and
// the engine reduces them to three numbers per row. Backward computes each chunk's logits again,
// turns them in place into their gradient and feeds it to the input and weight matmuls; the
// weight and bias gradients of float16/bfloat16 accumulate across chunks in float32.
// Autograd: autograd/linear_log_probs.cpp.

#include "ops/linear_log_probs.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "engines/row_engines.h"
#include "ops/arguments.h"
#include "ops/cross_entropy_common.h"
#include "ops/linear_head.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;
constexpr c10::string_view kOp = "linear_log_probs";

// Checks shapes, dtypes, devices and options; returns the input's leading shape (the outputs').
c10::SymDimVector check_problem(const Tensor& input, const Tensor& linear_weight,
                                const Tensor& target, const OptionalTensor& linear_bias,
                                double temperature, std::optional<int64_t> chunk_size) {
  TORCH_CHECK(input.dim() >= 1, "fusedloss.", kOp,
              ": input must be (N, H) or (B, T, H) (any leading dimensions), got a 0-d tensor");
  TORCH_CHECK(linear_weight.dim() == 2, "fusedloss.", kOp,
              ": linear_weight must be (V, H), got shape ", linear_weight.sym_sizes());
  TORCH_CHECK(linear_weight.sym_size(1) == input.sym_size(-1), "fusedloss.", kOp,
              ": linear_weight of shape ", linear_weight.sym_sizes(), " does not fit input of shape ",
              input.sym_sizes(), " (its last dimension must be H = ", input.sym_size(-1), ")");
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(input.scalar_type()), "fusedloss.", kOp,
                              ": input must be float32, float64, float16 or bfloat16, got ",
                              input.scalar_type());
  TORCH_CHECK(linear_weight.scalar_type() == input.scalar_type(), "fusedloss.", kOp,
              ": linear_weight must have the input's dtype (", input.scalar_type(), "), got ",
              linear_weight.scalar_type());
  const auto leading = input.sym_sizes().slice(0, input.dim() - 1);
  TORCH_CHECK(target.scalar_type() == at::kLong, "fusedloss.", kOp,
              ": target must hold int64 token ids, got ", target.scalar_type());
  TORCH_CHECK(target.sym_sizes() == leading, "fusedloss.", kOp, ": target must have shape ",
              leading, " (one token per row of input of shape ", input.sym_sizes(), "), got ",
              target.sym_sizes());
  for (const auto& [name, tensor] :
       {std::pair{"target", &target}, {"linear_weight", &linear_weight}}) {
    TORCH_CHECK(tensor->device() == input.device(), "fusedloss.", kOp, ": ", name,
                " must be on the device of input (", input.device(), "), got ", tensor->device());
  }
  if (linear_bias.has_value()) {
    TORCH_CHECK(linear_bias->dim() == 1 && linear_bias->sym_size(0) == linear_weight.sym_size(0),
                "fusedloss.", kOp, ": linear_bias must have shape [", linear_weight.sym_size(0),
                "] (one value per class), got shape ", linear_bias->sym_sizes());
    TORCH_CHECK(linear_bias->scalar_type() == input.scalar_type(), "fusedloss.", kOp,
                ": linear_bias must have the input's dtype (", input.scalar_type(), "), got ",
                linear_bias->scalar_type());
    TORCH_CHECK(linear_bias->device() == input.device(), "fusedloss.", kOp,
                ": linear_bias must be on the device of input (", input.device(), "), got ",
                linear_bias->device());
  }
  TORCH_CHECK_VALUE(temperature > 0 && std::isfinite(temperature), "fusedloss.", kOp,
                    ": temperature must be positive and finite, got ", temperature);
  TORCH_CHECK_VALUE(!chunk_size.has_value() || *chunk_size > 0, "fusedloss.", kOp,
                    ": chunk_size must be positive (or None), got ", chunk_size.value_or(0));
  return c10::SymDimVector(leading.begin(), leading.end());
}

// The rows of input per chunk.
int64_t chunk_rows(const Tensor& input, int64_t rows, int64_t vocab,
                   std::optional<int64_t> chunk_size) {
  return std::min<int64_t>(
      std::max<int64_t>(rows, 1),
      chunk_size.value_or(default_chunk_rows(rows, vocab, input.scalar_type(), input.device())));
}

using Engine = void (*)(const LogProbsSpec&, const LogProbsOperands&);

template <Engine engine>
std::tuple<Tensor, Tensor, Tensor> forward_on_device(const Tensor& input,
                                                     const Tensor& linear_weight,
                                                     const Tensor& target,
                                                     const OptionalTensor& linear_bias,
                                                     double temperature, int64_t ignore_index,
                                                     std::optional<int64_t> chunk_size,
                                                     bool check_target) {
  check_problem(input, linear_weight, target, linear_bias, temperature, chunk_size);
  const int64_t hidden = input.size(-1), vocab = linear_weight.size(0);
  const auto leading = input.sizes().slice(0, input.dim() - 1);
  const int64_t rows = c10::multiply_integers(leading);
  const Tensor x = input.reshape({rows, hidden});
  const Tensor t = checked_class_targets(kOp, target, vocab, ignore_index, check_target);
  const auto acc_options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  const Tensor log_probs = at::empty(leading, acc_options);
  const Tensor entropy = at::empty(leading, acc_options);
  const Tensor lse = at::empty(leading, acc_options);
  const LogProbsSpec spec{temperature, ignore_index};
  const int64_t chunk = chunk_rows(input, rows, vocab, chunk_size);
  const Tensor w_t = linear_weight.t();
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t len = std::min(chunk, rows - start);
    LogProbsOperands o;
    o.logits = chunk_logits(x.narrow(0, start, len), w_t, linear_bias);
    o.target = t.narrow(0, start, len);
    o.log_probs = log_probs.view({rows}).narrow(0, start, len);
    o.entropy = entropy.view({rows}).narrow(0, start, len);
    o.log_sum_exp = lse.view({rows}).narrow(0, start, len);
    engine(spec, o);
  }
  return {log_probs, entropy, lse};
}

template <Engine engine>
std::tuple<Tensor, Tensor, Tensor> backward_on_device(
    const OptionalTensor& grad_log_probs, const OptionalTensor& grad_entropy, const Tensor& input,
    const Tensor& linear_weight, const Tensor& target, const OptionalTensor& linear_bias,
    const Tensor& entropy, const Tensor& log_sum_exp, double temperature, int64_t ignore_index,
    std::optional<int64_t> chunk_size, bool grad_input, bool grad_weight, bool grad_bias) {
  check_problem(input, linear_weight, target, linear_bias, temperature, chunk_size);
  TORCH_CHECK(!grad_bias || linear_bias.has_value(),
              "fusedloss._linear_log_probs_backward: grad_bias without a bias");
  const int64_t hidden = input.size(-1), vocab = linear_weight.size(0);
  const int64_t rows = input.numel() / std::max<int64_t>(hidden, 1);
  const auto dtype = input.scalar_type();
  const auto acc_dtype = accumulation_dtype(dtype);
  const auto flat = [&](const OptionalTensor& g) {
    return g.has_value() ? g->reshape({rows}).to(acc_dtype).contiguous() : Tensor();
  };
  const Tensor x = input.reshape({rows, hidden});
  const Tensor t = target.reshape({rows}).contiguous();
  const Tensor gl = flat(grad_log_probs), gh = flat(grad_entropy);
  const Tensor h = entropy.reshape({rows}).contiguous(), lse = log_sum_exp.reshape({rows}).contiguous();
  HeadGradients grads(rows, hidden, vocab, input.options(), grad_input, grad_weight, grad_bias);
  const LogProbsSpec spec{temperature, ignore_index};
  const int64_t chunk = chunk_rows(input, rows, vocab, chunk_size);
  const Tensor w_t = linear_weight.t();
  const bool any = (gl.defined() || gh.defined()) && (grad_input || grad_weight || grad_bias);
  for (int64_t start = 0; any && start < rows; start += chunk) {
    const int64_t len = std::min(chunk, rows - start);
    const Tensor xc = x.narrow(0, start, len);
    LogProbsOperands o;
    o.logits = chunk_logits(xc, w_t, linear_bias);
    o.grad_input = o.logits;  // overwritten in place with its gradient
    o.target = t.narrow(0, start, len);
    o.entropy = h.narrow(0, start, len);
    o.log_sum_exp = lse.narrow(0, start, len);
    if (gl.defined()) o.grad_log_probs = gl.narrow(0, start, len);
    if (gh.defined()) o.grad_entropy = gh.narrow(0, start, len);
    engine(spec, o);
    grads.add_chunk(o.grad_input, xc, linear_weight, start);
  }
  return {grad_input ? grads.input().view(input.sizes()) : grads.input(), grads.weight(),
          grads.bias()};
}

std::tuple<Tensor, Tensor, Tensor> forward_meta(const Tensor& input, const Tensor& linear_weight,
                                                const Tensor& target,
                                                const OptionalTensor& linear_bias,
                                                double temperature, int64_t /*ignore_index*/,
                                                std::optional<int64_t> chunk_size,
                                                bool /*check_target*/) {
  const auto leading =
      check_problem(input, linear_weight, target, linear_bias, temperature, chunk_size);
  const auto options = input.options().dtype(accumulation_dtype(input.scalar_type()));
  return {at::empty_symint(leading, options), at::empty_symint(leading, options),
          at::empty_symint(leading, options)};
}

std::tuple<Tensor, Tensor, Tensor> backward_meta(
    const OptionalTensor& /*grad_log_probs*/, const OptionalTensor& /*grad_entropy*/,
    const Tensor& input, const Tensor& linear_weight, const Tensor& target,
    const OptionalTensor& linear_bias, const Tensor& /*entropy*/, const Tensor& /*log_sum_exp*/,
    double temperature, int64_t /*ignore_index*/, std::optional<int64_t> chunk_size,
    bool grad_input, bool grad_weight, bool grad_bias) {
  check_problem(input, linear_weight, target, linear_bias, temperature, chunk_size);
  const auto like = [&](bool wanted, const Tensor& t) {
    return wanted ? at::empty_symint(t.sym_sizes(), input.options())
                  : at::empty({0}, input.options());
  };
  return {like(grad_input, input), like(grad_weight, linear_weight),
          grad_bias ? like(true, *linear_bias) : at::empty({0}, input.options())};
}

std::tuple<Tensor, Tensor> log_probs_and_entropy(const Tensor& input, const Tensor& linear_weight,
                                                 const Tensor& target,
                                                 const OptionalTensor& linear_bias,
                                                 double temperature, int64_t ignore_index,
                                                 std::optional<int64_t> chunk_size,
                                                 bool check_target) {
  auto [log_probs, entropy, lse] = linear_log_probs_forward(
      input, linear_weight, target, linear_bias, {temperature, ignore_index, chunk_size},
      check_target);
  return {log_probs, entropy};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> linear_log_probs_forward(const Tensor& input,
                                                            const Tensor& linear_weight,
                                                            const Tensor& target,
                                                            const OptionalTensor& linear_bias,
                                                            const LinearLogProbsArgs& args,
                                                            bool check_target) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_linear_log_probs_forward", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(input, linear_weight, target, linear_bias, args.temperature,
                     args.ignore_index, args.chunk_size, check_target);
}

std::tuple<Tensor, Tensor, Tensor> linear_log_probs_backward(
    const OptionalTensor& grad_log_probs, const OptionalTensor& grad_entropy, const Tensor& input,
    const Tensor& linear_weight, const Tensor& target, const OptionalTensor& linear_bias,
    const Tensor& entropy, const Tensor& log_sum_exp, const LinearLogProbsArgs& args,
    bool grad_input, bool grad_weight, bool grad_bias) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_linear_log_probs_backward", "")
                           .typed<decltype(backward_meta)>();
  return handle.call(grad_log_probs, grad_entropy, input, linear_weight, target, linear_bias,
                     entropy, log_sum_exp, args.temperature, args.ignore_index, args.chunk_size,
                     grad_input, grad_weight, grad_bias);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "linear_log_probs(Tensor input, Tensor linear_weight, Tensor target, "
      "Tensor? linear_bias=None, *, float temperature=1.0, int ignore_index=-100, "
      "int? chunk_size=None, bool check_target=True) -> (Tensor log_probs, Tensor entropy)");
  m.def(
      "_linear_log_probs_forward(Tensor input, Tensor linear_weight, Tensor target, "
      "Tensor? linear_bias, float temperature, int ignore_index, int? chunk_size, "
      "bool check_target) -> (Tensor log_probs, Tensor entropy, Tensor log_sum_exp)");
  m.def(
      "_linear_log_probs_backward(Tensor? grad_log_probs, Tensor? grad_entropy, Tensor input, "
      "Tensor linear_weight, Tensor target, Tensor? linear_bias, Tensor entropy, "
      "Tensor log_sum_exp, float temperature, int ignore_index, int? chunk_size, "
      "bool grad_input, bool grad_weight, bool grad_bias) "
      "-> (Tensor grad_input, Tensor grad_linear_weight, Tensor grad_linear_bias)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("linear_log_probs", TORCH_FN(fusedloss::ops::log_probs_and_entropy));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_linear_log_probs_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::log_probs_kernel>));
  m.impl("_linear_log_probs_backward",
         TORCH_FN(fusedloss::ops::backward_on_device<fusedloss::cpu::log_probs_backward_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_linear_log_probs_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::log_probs_kernel>));
  m.impl("_linear_log_probs_backward",
         TORCH_FN(fusedloss::ops::backward_on_device<fusedloss::cuda::log_probs_backward_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_linear_log_probs_forward", TORCH_FN(fusedloss::ops::forward_meta));
  m.impl("_linear_log_probs_backward", TORCH_FN(fusedloss::ops::backward_meta));
}
