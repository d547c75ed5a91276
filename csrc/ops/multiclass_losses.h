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
  Tensor z_loss;          // the z-loss part of loss, reduced the same way (zeros when z_loss == 0)
  Tensor grad_input;      // d(loss)/d(input) or empty
  Tensor grad_target;     // d(loss)/d(target) (probability targets) or empty
  Tensor backward_scale;  // reduced: what backward multiplies grad_output by (0-d); 'none': empty
};

// fusedloss::_cross_entropy_forward through the dispatcher. The gradients are those of the loss
// up to backward_scale (1 where the 1/denominator of 'mean' is folded in).
CrossEntropyResult cross_entropy_forward(const Tensor& input, const Tensor& target,
                                         const OptionalTensor& weight, const CrossEntropyArgs& args,
                                         bool compute_grad, bool compute_target_grad);

// fusedloss::_multi_margin_loss_forward through the dispatcher: loss, d(loss)/d(input) (empty
// unless compute_grad) up to the backward scale, and that scale (as CrossEntropyResult's).
std::tuple<Tensor, Tensor, Tensor> multi_margin_loss_forward(const Tensor& input,
                                                             const Tensor& target, int64_t p,
                                                             double margin,
                                                             const OptionalTensor& weight,
                                                             c10::string_view reduction,
                                                             bool compute_grad);

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

// Registers the public cross entropy ops of `m` with CrossEntropyOps<ce>.
#define FUSEDLOSS_IMPL_CROSS_ENTROPY_OPS(m, ce)                                    \
  do {                                                                             \
    using Ops = ::fusedloss::ops::CrossEntropyOps<ce>;                             \
    m.impl("cross_entropy", TORCH_FN(Ops::cross_entropy));                         \
    m.impl("cross_entropy_with_z_loss", TORCH_FN(Ops::cross_entropy_with_z_loss)); \
  } while (0)

}  // namespace ops
}  // namespace fusedloss
