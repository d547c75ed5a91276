#pragma once
// The multi-class losses at the operator layer: the internal fused ops the autograd layer calls,
// and the public ops' signatures written once for the kernels below and at autograd.

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace fusedloss {
namespace ops {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

// Options of cross_entropy beyond the input tensors, in schema order.
struct CrossEntropyArgs {
  int64_t ignore_index = -100;
  c10::string_view reduction = "mean";
  double label_smoothing = 0;
  double z_loss = 0;
  std::optional<double> softcap;
  bool check_target = true;
};

struct CrossEntropyResult {
  Tensor loss;
  Tensor z_loss;        // the z-loss part of loss, reduced the same way (zeros when z_loss == 0)
  Tensor grad_input;    // d(loss)/d(input) or empty
  Tensor grad_target;   // d(loss)/d(target) (probability targets) or empty
  Tensor grad_divisor;  // what backward divides grad_output by ('mean' not folded into grads)
};

// fusedloss::_cross_entropy_forward through the dispatcher. With mean_in_grad the 1/denominator of
// reduction='mean' is already in the gradients and grad_divisor is 1.
CrossEntropyResult cross_entropy_forward(const Tensor& input, const Tensor& target,
                                         const OptionalTensor& weight, const CrossEntropyArgs& args,
                                         bool compute_grad, bool compute_target_grad,
                                         bool mean_in_grad);

// fusedloss::_multi_margin_loss_forward through the dispatcher: loss, d(loss)/d(input) (empty
// unless compute_grad) with the 1/N of 'mean' folded in when mean_in_grad, and what backward
// divides grad_output by (N for a 'mean' not folded in, else 1).
std::tuple<Tensor, Tensor, Tensor> multi_margin_loss_forward(
    const Tensor& input, const Tensor& target, int64_t p, double margin,
    const OptionalTensor& weight, c10::string_view reduction, bool compute_grad, bool mean_in_grad);

// An implementation of the public cross entropy ops: returns (loss, z_loss).
using CrossEntropyEntry = std::tuple<Tensor, Tensor> (*)(const Tensor&, const Tensor&,
                                                         const OptionalTensor&,
                                                         const CrossEntropyArgs&);
using MultiMarginEntry = Tensor (*)(const Tensor&, const Tensor&, int64_t, double,
                                    const OptionalTensor&, c10::string_view);

template <CrossEntropyEntry Entry>
struct CrossEntropyOps {
  static Tensor cross_entropy(const Tensor& input, const Tensor& target,
                              const OptionalTensor& weight, int64_t ignore_index,
                              c10::string_view reduction, double label_smoothing, double z_loss,
                              std::optional<double> softcap, bool check_target) {
    return std::get<0>(
        Entry(input, target, weight,
              {ignore_index, reduction, label_smoothing, z_loss, softcap, check_target}));
  }
  static std::tuple<Tensor, Tensor> cross_entropy_with_z_loss(
      const Tensor& input, const Tensor& target, const OptionalTensor& weight, int64_t ignore_index,
      c10::string_view reduction, double label_smoothing, double z_loss,
      std::optional<double> softcap, bool check_target) {
    return Entry(input, target, weight,
                 {ignore_index, reduction, label_smoothing, z_loss, softcap, check_target});
  }
};

// Registers the public multi-class ops of `m` with CrossEntropyOps<ce> and the multi-margin `mm`.
#define FUSEDLOSS_IMPL_MULTICLASS_OPS(m, ce, mm)                                   \
  do {                                                                             \
    using Ops = ::fusedloss::ops::CrossEntropyOps<ce>;                             \
    m.impl("cross_entropy", TORCH_FN(Ops::cross_entropy));                         \
    m.impl("cross_entropy_with_z_loss", TORCH_FN(Ops::cross_entropy_with_z_loss)); \
    m.impl("multi_margin_loss", TORCH_FN(mm));                                     \
  } while (0)

}  // namespace ops
}  // namespace fusedloss
