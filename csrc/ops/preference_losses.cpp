// Preference and RL losses on per-token or per-sequence log-probabilities, with the formulas of
// TRL 1.9.0 (DPOTrainer._compute_loss, GRPOTrainer._compute_loss), and their fused heads, which
// take the hidden states and the LM head and get the log-probabilities from linear_log_probs (no
// (N, V) logits held). They are compositions of ATen ops and linear_log_probs
// (CompositeImplicitAutograd): autograd, export and every backend come from their parts.

#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/log_sigmoid.h>
#include <ATen/ops/minimum.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <string>

#include "ops/arguments.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

Tensor reduced(const Tensor& losses, at::Reduction::Reduction reduction) {
  switch (reduction) {
    case at::Reduction::Mean: return losses.mean();
    case at::Reduction::Sum: return losses.sum();
    default: return losses;
  }
}

void check_same_shape(const char* op, const char* name, const Tensor& t, const char* like_name,
                      const Tensor& like) {
  TORCH_CHECK(t.sym_sizes() == like.sym_sizes(), "fusedloss.", op, ": ", name, " must have the ",
              like_name, "'s shape ", like.sym_sizes(), ", got ", t.sym_sizes());
  TORCH_CHECK(t.device() == like.device(), "fusedloss.", op, ": ", name, " must be on the ",
              like_name, "'s device ", like.device(), ", got ", t.device());
}

// ---- DPO on sequence log-probabilities.

// Returns (loss, chosen_rewards, rejected_rewards); the rewards are beta times the detached
// log-ratios, as TRL logs them.
std::tuple<Tensor, Tensor, Tensor> dpo_loss(const Tensor& chosen_logps, const Tensor& rejected_logps,
                                            const Tensor& ref_chosen_logps,
                                            const Tensor& ref_rejected_logps, double beta,
                                            c10::string_view loss_type, double label_smoothing,
                                            const OptionalTensor& chosen_lengths,
                                            const OptionalTensor& rejected_lengths,
                                            c10::string_view reduction_name) {
  constexpr const char* op = "dpo_loss";
  const auto reduction = parse_reduction(op, reduction_name);
  TORCH_CHECK(at::isFloatingType(chosen_logps.scalar_type()), "fusedloss.dpo_loss: "
              "chosen_logps must be floating point, got ", chosen_logps.scalar_type());
  check_same_shape(op, "rejected_logps", rejected_logps, "chosen_logps", chosen_logps);
  check_same_shape(op, "ref_chosen_logps", ref_chosen_logps, "chosen_logps", chosen_logps);
  check_same_shape(op, "ref_rejected_logps", ref_rejected_logps, "chosen_logps", chosen_logps);
  TORCH_CHECK_VALUE(beta > 0 && std::isfinite(beta), "fusedloss.dpo_loss: beta must be positive "
                    "and finite, got ", beta);
  const bool robust = loss_type == "robust";
  TORCH_CHECK_VALUE(loss_type == "sigmoid" || loss_type == "hinge" || loss_type == "ipo" || robust,
                    "fusedloss.dpo_loss: loss_type must be 'sigmoid', 'hinge', 'ipo' or 'robust', "
                    "got '", loss_type, "'");
  TORCH_CHECK_VALUE(robust ? (label_smoothing >= 0 && label_smoothing < 0.5)
                           : label_smoothing == 0,
                    "fusedloss.dpo_loss: label_smoothing ",
                    robust ? "must be in [0, 0.5) for loss_type 'robust'"
                           : "is used only by loss_type 'robust' (as in TRL 1.9), it must be 0 for "
                             "loss_type '" + std::string(loss_type) + "'",
                    ", got ", label_smoothing);
  const Tensor chosen_ratio = chosen_logps - ref_chosen_logps;
  const Tensor rejected_ratio = rejected_logps - ref_rejected_logps;
  Tensor losses;
  if (loss_type == "ipo") {
    TORCH_CHECK_VALUE(chosen_lengths.has_value() && rejected_lengths.has_value(),
                      "fusedloss.dpo_loss: loss_type 'ipo' averages the log-ratios over the "
                      "completion tokens: pass chosen_lengths and rejected_lengths");
    check_same_shape(op, "chosen_lengths", *chosen_lengths, "chosen_logps", chosen_logps);
    check_same_shape(op, "rejected_lengths", *rejected_lengths, "chosen_logps", chosen_logps);
    const auto per_token = [&](const Tensor& ratio, const Tensor& lengths) {
      return ratio / lengths.to(ratio.scalar_type()).clamp_min(1.0);
    };
    const Tensor margin =
        per_token(chosen_ratio, *chosen_lengths) - per_token(rejected_ratio, *rejected_lengths);
    losses = (margin - 1.0 / (2.0 * beta)).pow(2);
  } else {
    const Tensor scaled = (chosen_ratio - rejected_ratio) * beta;
    if (loss_type == "sigmoid") {
      losses = -at::log_sigmoid(scaled);
    } else if (loss_type == "hinge") {
      losses = at::relu(1.0 - scaled);
    } else {  // robust: unbiased under preference noise of rate label_smoothing
      losses = (-(1.0 - label_smoothing) * at::log_sigmoid(scaled) +
                label_smoothing * at::log_sigmoid(-scaled)) /
               (1.0 - 2.0 * label_smoothing);
    }
  }
  return {reduced(losses, reduction), chosen_ratio.detach() * beta,
          rejected_ratio.detach() * beta};
}

// ---- GRPO's policy loss on per-token log-probabilities (B, T).

struct GrpoOptions {
  double beta, epsilon_low;
  std::optional<double> epsilon_high, delta;
  c10::string_view loss_type, importance_sampling_level;
  std::optional<int64_t> max_completion_length;
};

Tensor grpo_loss_impl(const Tensor& per_token_logps, const Tensor& advantages,
                      const Tensor& completion_mask, const OptionalTensor& old_per_token_logps,
                      const OptionalTensor& ref_per_token_logps,
                      const OptionalTensor& num_items_in_batch, const GrpoOptions& o) {
  constexpr const char* op = "grpo_loss";
  TORCH_CHECK(per_token_logps.dim() == 2 && at::isFloatingType(per_token_logps.scalar_type()),
              "fusedloss.grpo_loss: per_token_logps must be a floating-point (B, T) tensor, got ",
              per_token_logps.scalar_type(), " of shape ", per_token_logps.sym_sizes());
  check_same_shape(op, "completion_mask", completion_mask, "per_token_logps", per_token_logps);
  const auto batch = per_token_logps.sym_size(0);
  TORCH_CHECK(advantages.dim() == 1 && advantages.sym_size(0) == batch, "fusedloss.grpo_loss: "
              "advantages must have shape [", batch, "] (one per completion), got ",
              advantages.sym_sizes());
  if (old_per_token_logps.has_value()) {
    check_same_shape(op, "old_per_token_logps", *old_per_token_logps, "per_token_logps",
                     per_token_logps);
  }
  TORCH_CHECK_VALUE(o.beta >= 0, "fusedloss.grpo_loss: beta must be >= 0, got ", o.beta);
  TORCH_CHECK_VALUE(o.beta == 0 || ref_per_token_logps.has_value(),
                    "fusedloss.grpo_loss: beta = ", o.beta,
                    " penalizes the KL to the reference: pass ref_per_token_logps");
  if (ref_per_token_logps.has_value()) {
    check_same_shape(op, "ref_per_token_logps", *ref_per_token_logps, "per_token_logps",
                     per_token_logps);
  }
  const double eps_low = o.epsilon_low, eps_high = o.epsilon_high.value_or(o.epsilon_low);
  TORCH_CHECK_VALUE(eps_low >= 0 && eps_high >= 0, "fusedloss.grpo_loss: epsilon_low and "
                    "epsilon_high must be >= 0, got ", eps_low, " and ", eps_high);
  const auto& type = o.loss_type;
  TORCH_CHECK_VALUE(type == "grpo" || type == "bnpo" || type == "dr_grpo" || type == "dapo",
                    "fusedloss.grpo_loss: loss_type must be 'grpo', 'bnpo', 'dr_grpo' or 'dapo', "
                    "got '", type, "'");
  TORCH_CHECK_VALUE(o.importance_sampling_level == "token" ||
                        o.importance_sampling_level == "sequence",
                    "fusedloss.grpo_loss: importance_sampling_level must be 'token' or "
                    "'sequence', got '", o.importance_sampling_level, "'");
  TORCH_CHECK_VALUE(type != "dr_grpo" || o.max_completion_length.value_or(0) > 0,
                    "fusedloss.grpo_loss: loss_type 'dr_grpo' divides by B * "
                    "max_completion_length: pass a positive max_completion_length");

  const Tensor mask = completion_mask.to(per_token_logps.scalar_type());
  // No old log-probs (one update per generation): the ratio is 1 in value, its gradient that of
  // the log-probabilities.
  const Tensor old = old_per_token_logps.has_value() ? *old_per_token_logps
                                                     : per_token_logps.detach();
  Tensor log_ratio = per_token_logps - old;
  if (o.importance_sampling_level == "sequence") {  // GSPO: one ratio per sequence
    log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).unsqueeze(-1);
  }
  Tensor ratio = at::exp(log_ratio);
  const Tensor clipped = at::clamp(ratio, 1.0 - eps_low, 1.0 + eps_high);
  if (o.delta.has_value()) ratio = at::clamp(ratio, std::nullopt, *o.delta);  // two-sided clip
  const Tensor a = advantages.unsqueeze(1).to(per_token_logps.scalar_type());
  Tensor per_token = -at::minimum(ratio * a, clipped * a);
  if (o.beta != 0) {
    const Tensor diff = *ref_per_token_logps - per_token_logps;
    per_token = per_token + o.beta * (at::exp(diff) - diff - 1.0);  // k3 estimator of KL
  }
  const Tensor masked = per_token * mask;
  if (type == "grpo") return (masked.sum(-1) / mask.sum(-1).clamp_min(1.0)).mean();
  if (type == "bnpo") return masked.sum() / mask.sum().clamp_min(1.0);
  if (type == "dr_grpo") {  // Σ / (B · max_completion_length)
    return masked.sum(-1).mean() / static_cast<double>(*o.max_completion_length);
  }
  // dapo: over the active tokens of the whole (accumulated, all-process) batch when given.
  const Tensor tokens = num_items_in_batch.has_value()
                            ? num_items_in_batch->to(per_token_logps.scalar_type())
                            : mask.sum();
  return masked.sum() / tokens.clamp_min(1.0);
}

Tensor grpo_loss(const Tensor& per_token_logps, const Tensor& advantages,
                 const Tensor& completion_mask, const OptionalTensor& old_per_token_logps,
                 const OptionalTensor& ref_per_token_logps, double beta, double epsilon_low,
                 std::optional<double> epsilon_high, std::optional<double> delta,
                 c10::string_view loss_type, c10::string_view importance_sampling_level,
                 std::optional<int64_t> max_completion_length,
                 const OptionalTensor& num_items_in_batch) {
  return grpo_loss_impl(per_token_logps, advantages, completion_mask, old_per_token_logps,
                        ref_per_token_logps, num_items_in_batch,
                        {beta, epsilon_low, epsilon_high, delta, loss_type,
                         importance_sampling_level, max_completion_length});
}

// ---- Fused heads.

std::tuple<Tensor, Tensor> log_probs_of(const Tensor& input, const Tensor& linear_weight,
                                        const Tensor& target, const OptionalTensor& linear_bias,
                                        double temperature, std::optional<int64_t> chunk_size) {
  static const auto handle =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedloss::linear_log_probs", "")
          .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                            const OptionalTensor&, double, int64_t,
                                            std::optional<int64_t>, bool)>();
  return handle.call(input, linear_weight, target, linear_bias, temperature, -100, chunk_size,
                     true);
}

Tensor linear_grpo_loss(const Tensor& input, const Tensor& linear_weight,
                        const Tensor& completion_ids, const Tensor& advantages,
                        const Tensor& completion_mask, const OptionalTensor& old_per_token_logps,
                        const OptionalTensor& ref_per_token_logps,
                        const OptionalTensor& linear_bias, double temperature, double beta,
                        double epsilon_low, std::optional<double> epsilon_high,
                        std::optional<double> delta, c10::string_view loss_type,
                        c10::string_view importance_sampling_level,
                        std::optional<int64_t> max_completion_length,
                        const OptionalTensor& num_items_in_batch,
                        std::optional<int64_t> chunk_size) {
  const auto [log_probs, entropy] =
      log_probs_of(input, linear_weight, completion_ids, linear_bias, temperature, chunk_size);
  return grpo_loss_impl(log_probs, advantages, completion_mask, old_per_token_logps,
                        ref_per_token_logps, num_items_in_batch,
                        {beta, epsilon_low, epsilon_high, delta, loss_type,
                         importance_sampling_level, max_completion_length});
}

// The batch holds the chosen completions, then the rejected ones (TRL's concatenated batch).
// Sequence log-probs sum the completion tokens; the reference's are given or computed (no grad)
// from its hidden states and head.
std::tuple<Tensor, Tensor, Tensor> linear_dpo_loss(
    const Tensor& input, const Tensor& linear_weight, const Tensor& target,
    const Tensor& completion_mask, const OptionalTensor& ref_chosen_logps,
    const OptionalTensor& ref_rejected_logps, const OptionalTensor& ref_input,
    const OptionalTensor& ref_weight, const OptionalTensor& linear_bias,
    const OptionalTensor& ref_bias, double beta, c10::string_view loss_type,
    double label_smoothing, double temperature, std::optional<int64_t> chunk_size) {
  TORCH_CHECK(input.dim() == 3 && input.sym_size(0) % 2 == 0, "fusedloss.linear_dpo_loss: input "
              "must be (2B, T, H), the chosen completions then the rejected ones, got shape ",
              input.sym_sizes());
  check_same_shape("linear_dpo_loss", "completion_mask", completion_mask, "target", target);
  const bool given = ref_chosen_logps.has_value() && ref_rejected_logps.has_value();
  const bool computed = ref_input.has_value() && ref_weight.has_value();
  TORCH_CHECK_VALUE(given != computed, "fusedloss.linear_dpo_loss: pass the reference's sequence "
                    "log-probs (ref_chosen_logps and ref_rejected_logps) or its hidden states and "
                    "head (ref_input and ref_weight), exactly one of the two");
  const Tensor mask = completion_mask.to(at::kFloat);
  // The first and the second half of the batch (narrow, not chunk: no guard on the batch size).
  const c10::SymInt pairs = input.sym_size(0) / 2;
  const auto halves = [&](const Tensor& t) {
    return std::vector<Tensor>{t.narrow_symint(0, 0, pairs), t.narrow_symint(0, pairs, pairs)};
  };
  const auto sequence_logps = [&](const Tensor& x, const Tensor& w, const OptionalTensor& b) {
    const Tensor lp = std::get<0>(log_probs_of(x, w, target, b, temperature, chunk_size));
    return halves((lp * mask.to(lp.scalar_type())).sum(-1));
  };
  const auto policy = sequence_logps(input, linear_weight, linear_bias);
  std::vector<Tensor> reference;
  if (given) {
    reference = {*ref_chosen_logps, *ref_rejected_logps};
  } else {
    at::NoGradGuard no_grad;
    reference = sequence_logps(*ref_input, *ref_weight, ref_bias);
  }
  const auto lengths = halves(mask.sum(-1));
  return dpo_loss(policy[0], policy[1], reference[0].to(policy[0].scalar_type()),
                  reference[1].to(policy[0].scalar_type()), beta, loss_type, label_smoothing,
                  lengths[0], lengths[1], "mean");
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "dpo_loss(Tensor chosen_logps, Tensor rejected_logps, Tensor ref_chosen_logps, "
      "Tensor ref_rejected_logps, float beta=0.1, str loss_type=\"sigmoid\", "
      "float label_smoothing=0.0, *, Tensor? chosen_lengths=None, Tensor? rejected_lengths=None, "
      "str reduction=\"mean\") -> (Tensor loss, Tensor chosen_rewards, Tensor rejected_rewards)");
  m.def(
      "grpo_loss(Tensor per_token_logps, Tensor advantages, Tensor completion_mask, "
      "Tensor? old_per_token_logps=None, Tensor? ref_per_token_logps=None, *, float beta=0.0, "
      "float epsilon_low=0.2, float? epsilon_high=None, float? delta=None, "
      "str loss_type=\"dapo\", str importance_sampling_level=\"token\", "
      "int? max_completion_length=None, Tensor? num_items_in_batch=None) -> Tensor");
  m.def(
      "linear_grpo_loss(Tensor input, Tensor linear_weight, Tensor completion_ids, "
      "Tensor advantages, Tensor completion_mask, Tensor? old_per_token_logps=None, "
      "Tensor? ref_per_token_logps=None, Tensor? linear_bias=None, *, float temperature=1.0, "
      "float beta=0.0, float epsilon_low=0.2, float? epsilon_high=None, float? delta=None, "
      "str loss_type=\"dapo\", str importance_sampling_level=\"token\", "
      "int? max_completion_length=None, Tensor? num_items_in_batch=None, "
      "int? chunk_size=None) -> Tensor");
  m.def(
      "linear_dpo_loss(Tensor input, Tensor linear_weight, Tensor target, Tensor completion_mask, "
      "Tensor? ref_chosen_logps=None, Tensor? ref_rejected_logps=None, *, "
      "Tensor? ref_input=None, Tensor? ref_weight=None, Tensor? linear_bias=None, "
      "Tensor? ref_bias=None, float beta=0.1, str loss_type=\"sigmoid\", "
      "float label_smoothing=0.0, float temperature=1.0, int? chunk_size=None) "
      "-> (Tensor loss, Tensor chosen_rewards, Tensor rejected_rewards)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeImplicitAutograd, m) {
  m.impl("dpo_loss", TORCH_FN(fusedloss::ops::dpo_loss));
  m.impl("grpo_loss", TORCH_FN(fusedloss::ops::grpo_loss));
  m.impl("linear_grpo_loss", TORCH_FN(fusedloss::ops::linear_grpo_loss));
  m.impl("linear_dpo_loss", TORCH_FN(fusedloss::ops::linear_dpo_loss));
}
