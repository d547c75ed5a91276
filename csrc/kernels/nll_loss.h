#pragma once
// The per-row math of nll_loss, shared by the CPU and CUDA engines (engines/row_engines.h).

#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>

namespace fusedloss {

// The weight of a row whose target is t: the class weight (1 without weights), 0 when the target
// is ignored, NaN when it is not a class (its loss and a 'mean' are then NaN, as documented for
// check_target=False). Never reads outside the weights.
template <typename acc, typename scalar_t>
C10_HOST_DEVICE inline acc nll_row_weight(int64_t t, const scalar_t* weight, int64_t classes,
                                          int64_t ignore_index) {
  if (t == ignore_index) return acc(0);
  if (t < 0 || t >= classes) return std::numeric_limits<acc>::quiet_NaN();
  return weight != nullptr ? static_cast<acc>(weight[t]) : acc(1);
}

// The loss of a row: -w * x, and 0 where w is 0 even when x is -inf (an ignored row, a class of
// weight 0; 0 * inf would be NaN).
template <typename acc>
C10_HOST_DEVICE inline acc nll_row_loss(acc w, acc x) {
  return w == acc(0) ? acc(0) : -(w * x);
}

// The factor backward gives the picked element of a row: -w * grad_output * scale, with scale
// 1/W for 'mean' (0 when W is 0: every row weighs 0 then, and 0 * inf would be NaN).
template <typename acc>
C10_HOST_DEVICE inline acc nll_mean_scale(bool mean, acc total_weight) {
  return !mean ? acc(1) : (total_weight == acc(0) ? acc(0) : acc(1) / total_weight);
}

}  // namespace fusedloss
