#pragma once
// jensen_shannon_divergence's internal op, as the autograd layer calls it (through the
// dispatcher).

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace fusedloss {
namespace ops {

// fusedloss::_jensen_shannon_divergence_forward: the loss, the student's gradient (empty unless
// compute_grad; up to backward_scale) and that scale (0-d for a reduced loss, empty for 'none').
std::tuple<at::Tensor, at::Tensor, at::Tensor> jensen_shannon_divergence_forward(
    const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& labels,
    double beta, double temperature, int64_t ignore_index, c10::string_view reduction,
    bool compute_grad);

}  // namespace ops
}  // namespace fusedloss
