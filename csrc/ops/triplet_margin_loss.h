#pragma once
// triplet_margin_loss's internal op, as the autograd layer calls it (through the dispatcher).

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <tuple>

namespace fusedloss {
namespace ops {

// fusedloss::_triplet_margin_loss_forward: the loss, the three inputs' gradients (each empty
// unless its compute_grad flag is set; in the inputs' broadcast shape, up to backward_scale) and
// that scale (0-d for a reduced loss, empty for 'none').
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplet_margin_loss_forward(
    const at::Tensor& anchor, const at::Tensor& positive, const at::Tensor& negative,
    double margin, double p, double eps, bool swap, c10::string_view reduction,
    std::array<bool, 3> compute_grad);

}  // namespace ops
}  // namespace fusedloss
