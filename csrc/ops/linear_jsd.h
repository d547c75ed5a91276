#pragma once
// linear_jsd's internal op, as the autograd layer calls it (through the dispatcher).

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace fusedloss {
namespace ops {

struct LinearJsdArgs {
  double beta = 0.5, temperature = 1;
  int64_t ignore_index = -100;
  c10::string_view reduction = "mean";
  std::optional<int64_t> chunk_size;
};

// fusedloss::_linear_jsd: (loss, grad_input, grad_linear_weight, grad_linear_bias,
// backward_scale). The gradients asked for are those of the summed divergence (times
// row_grad_scale per row for 'none'); backward multiplies them by grad_output and backward_scale
// (1 / the rows counted for 'mean').
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_jsd_forward(
    const at::Tensor& input, const at::Tensor& linear_weight, const at::Tensor& teacher_input,
    const std::optional<at::Tensor>& teacher_weight, const std::optional<at::Tensor>& labels,
    const std::optional<at::Tensor>& linear_bias, const std::optional<at::Tensor>& teacher_bias,
    const LinearJsdArgs& args, const std::optional<at::Tensor>& row_grad_scale, bool grad_input,
    bool grad_weight, bool grad_bias);

}  // namespace ops
}  // namespace fusedloss
