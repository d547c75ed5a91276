#pragma once
// ctc_loss's internal op, as the autograd layer calls it (through the dispatcher).

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace fusedloss {
namespace ops {

// fusedloss::_ctc_loss_forward: the loss, the log-probabilities' gradient (empty unless
// compute_grad; up to grad_output and backward_scale) and backward_scale (0-d for a reduced loss,
// empty for 'none').
std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_loss_forward(
    const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
    const at::Tensor& target_lengths, int64_t blank, c10::string_view reduction,
    bool zero_infinity, bool compute_grad);

}  // namespace ops
}  // namespace fusedloss
