#pragma once
// multilabel_margin_loss's internal op, as the autograd layer calls it (through the dispatcher).

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace fusedloss {
namespace ops {

// fusedloss::_multilabel_margin_loss_forward: the loss, the input's gradient (empty unless
// compute_grad; up to backward_scale) and that scale (0-d for a reduced loss, empty for 'none').
std::tuple<at::Tensor, at::Tensor, at::Tensor> multilabel_margin_loss_forward(
    const at::Tensor& input, const at::Tensor& target, c10::string_view reduction,
    bool compute_grad);

}  // namespace ops
}  // namespace fusedloss
