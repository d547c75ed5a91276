#pragma once
// linear_cross_entropy at the operator layer: the internal chunked op the autograd layer calls.

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace fusedloss {
namespace ops {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

struct LinearCrossEntropyArgs {
  int64_t ignore_index = -100;
  c10::string_view reduction = "mean";
  double label_smoothing = 0;
  double z_loss = 0;
  std::optional<double> softcap;
  std::optional<int64_t> chunk_size;
  bool check_target = true;
};

// The op's argument checks alone (a target that requires grad is a float one: probabilities).
void check_linear_cross_entropy(const Tensor& input, const Tensor& linear_weight,
                                const Tensor& target, const OptionalTensor& linear_bias,
                                const OptionalTensor& weight);

// fusedloss::_linear_cross_entropy through the dispatcher. Returns (loss, z_loss, grad_input,
// grad_linear_weight, grad_linear_bias, backward_scale); the gradients asked for are those of the
// loss (times row_grad_scale per row for reduction='none') up to backward_scale, the factor
// backward multiplies grad_output by (1 where the 1/denominator of 'mean' is folded in).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> linear_cross_entropy_forward(
    const Tensor& input, const Tensor& linear_weight, const Tensor& target,
    const OptionalTensor& linear_bias, const OptionalTensor& weight,
    const LinearCrossEntropyArgs& args, const OptionalTensor& row_grad_scale, bool grad_input,
    bool grad_weight, bool grad_bias);

}  // namespace ops
}  // namespace fusedloss
