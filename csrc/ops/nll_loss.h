#pragma once
// nll_loss's internal ops, as the autograd layer calls them (through the dispatcher).

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace fusedloss {
namespace ops {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

// fusedloss::_nll_loss_forward: the loss and the summed weights of the counted rows (0-d,
// accumulation dtype; what 'mean' divided by; empty for 'none').
std::tuple<Tensor, Tensor> nll_loss_forward(const Tensor& input, const Tensor& target,
                                            const OptionalTensor& weight, int64_t ignore_index,
                                            c10::string_view reduction, bool check_target);

// fusedloss::_nll_loss_backward: d(loss)/d(input) times grad_output, of shape input_size, written
// in one pass.
Tensor nll_loss_backward(const Tensor& grad_output, const Tensor& target,
                         const OptionalTensor& weight, const Tensor& total_weight,
                         c10::SymIntArrayRef input_size, int64_t ignore_index,
                         c10::string_view reduction);

}  // namespace ops
}  // namespace fusedloss
