#pragma once
// num / den where den != 0, else zero_division (torchmetrics' safe division), in float64: the
// one rule every counts-based metric score follows. The divisor of the unused branch is made 1,
// so no inf or NaN is computed even where it is discarded.

#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/where.h>

namespace fusedloss {
namespace ops {

inline at::Tensor divide_or(const at::Tensor& num, const at::Tensor& den, double zero_division) {
  const at::Tensor d = den.to(at::kDouble);
  const at::Tensor nonzero = d.ne(0);
  return at::where(nonzero, num.to(at::kDouble).div(at::where(nonzero, d, at::ones_like(d))),
                   at::full({}, zero_division, d.options()));
}

}  // namespace ops
}  // namespace fusedloss
