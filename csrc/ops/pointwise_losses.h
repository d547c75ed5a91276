#pragma once
// The pointwise loss family at the operator layer: the internal fused op that the public ops and
// the autograd layer call.

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace fusedloss {
namespace ops {

// fusedloss::_pointwise_loss_forward through the dispatcher. `loss` is the public op's name
// ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"); `param` is delta or beta. Returns the
// loss and, when compute_grad, the per-element d(loss)/d(input) at the broadcast shape (an empty
// tensor otherwise). That gradient includes the 1/n of reduction='mean' only when mean_in_grad;
// otherwise it is the derivative of the per-element loss, and the caller applies 1/n.
std::tuple<at::Tensor, at::Tensor> pointwise_loss_forward(const at::Tensor& input,
                                                          const at::Tensor& target,
                                                          c10::string_view loss, double param,
                                                          c10::string_view reduction,
                                                          bool compute_grad = false,
                                                          bool mean_in_grad = false);

}  // namespace ops
}  // namespace fusedloss
