// Argument parsing shared by every op family; see arguments.h.

#include "ops/arguments.h"

#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/ops/full.h>
#include <ATen/ops/where.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>

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

c10::SymDimVector broadcast_shape(c10::string_view op, const char* what, c10::SymIntArrayRef a,
                                  c10::SymIntArrayRef b) {
  const size_t ndim = std::max(a.size(), b.size());
  c10::SymDimVector shape(ndim);
  for (size_t i = 0; i < ndim; ++i) {
    const bool in_a = i < a.size(), in_b = i < b.size();
    const c10::SymInt& sa = in_a ? a[a.size() - 1 - i] : b[b.size() - 1 - i];
    const c10::SymInt& sb = in_b ? b[b.size() - 1 - i] : sa;
    TORCH_CHECK(sa == sb || sa == 1 || sb == 1, "fusedloss.", op, ": ", what, " of shapes ", a,
                " and ", b, " are not broadcastable (dimension ",
                static_cast<int64_t>(ndim - 1 - i), ": ", sa, " vs ", sb, ")");
    shape[ndim - 1 - i] = sa == 1 ? sb : sa;
  }
  return shape;
}

bool holds_no_values(const at::Tensor& t) { return t.is_meta() || at::isTensorSubclassLike(t); }

at::Tensor nan_where_invalid(const at::Tensor& result, const at::Tensor& invalid) {
  if (!result.is_floating_point()) return result;
  const at::Tensor nan =
      at::full({}, std::numeric_limits<double>::quiet_NaN(), result.options());
  return at::where(invalid.gt(0), nan, result);
}

int64_t first_true_position(const at::Tensor& mask) {
  return mask.reshape({-1}).nonzero().select(1, 0)[0].item<int64_t>();
}

}  // namespace ops
}  // namespace fusedloss
