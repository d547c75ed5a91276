// Argument parsing shared by every op family; see arguments.h.

#include "ops/arguments.h"

#include <c10/util/Exception.h>

namespace fusedloss {
namespace ops {

at::Reduction::Reduction parse_reduction(c10::string_view op, c10::string_view reduction) {
  if (reduction == "mean") return at::Reduction::Mean;
  if (reduction == "sum") return at::Reduction::Sum;
  if (reduction == "none") return at::Reduction::None;
  TORCH_CHECK_VALUE(false, "fusedloss.", op, ": reduction must be 'none', 'mean' or 'sum', got '",
                    reduction, "'");
}

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

at::ScalarType accumulation_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

bool folds_mean_into_gradient(at::ScalarType dtype) { return dtype != at::kHalf; }

int64_t first_true_position(const at::Tensor& mask) {
  return mask.reshape({-1}).nonzero().select(1, 0)[0].item<int64_t>();
}

}  // namespace ops
}  // namespace fusedloss
