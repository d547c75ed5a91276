#pragma once
// cosine_embedding_loss's internal op, as the autograd layer calls it (through the dispatcher).

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace fusedloss {
namespace ops {

// fusedloss::_cosine_embedding_loss_forward: the loss, both inputs' gradients (empty unless
// compute_grad; in the inputs' broadcast shape, up to backward_scale) and that scale (0-d for a
// reduced loss, empty for 'none').
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cosine_embedding_loss_forward(
    const at::Tensor& input1, const at::Tensor& input2, const at::Tensor& target, double margin,
    c10::string_view reduction, bool compute_grad);

}  // namespace ops
}  // namespace fusedloss
