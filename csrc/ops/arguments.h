#pragma once
// Argument parsing shared by every op family: reduction names, the floating dtypes the kernels
// take, broadcasting.

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/DimVector.h>
#include <c10/util/string_view.h>

namespace fusedloss {
namespace ops {

// 'none' | 'mean' | 'sum', else a ValueError naming the op.
at::Reduction::Reduction parse_reduction(c10::string_view op, c10::string_view reduction);

// float32, float64, float16 or bfloat16.
bool is_supported_dtype(at::ScalarType t);

// float for float32/float16/bfloat16, double for float64.
at::ScalarType accumulation_dtype(at::ScalarType t);

// Whether the gradient a fused loss saves may hold the 1/n of reduction='mean': yes for float32,
// float64 and bfloat16 (float32's exponent range); float16 gradients keep the sum's scale (g/n
// could underflow there, and loss scaling needs it kept) and backward applies 1/n in float
// (ops/scale_gradient.h). The one place this is decided.
bool folds_mean_into_gradient(at::ScalarType dtype);

// The shape two shapes broadcast to, else a RuntimeError naming `what` ("input and target"), both
// shapes and the first dimension that differs.
c10::SymDimVector broadcast_shape(c10::string_view op, const char* what, c10::SymIntArrayRef a,
                                  c10::SymIntArrayRef b);

// Whether `t` holds no values to read: a fake or functional tensor while torch.export or
// torch.compile traces. A check that reads a value is then skipped (see nan_where_invalid).
bool holds_no_values(const at::Tensor& t);

// A traced metric cannot raise on the count of invalid labels it was given: its floating result
// is NaN where that count is nonzero instead (integer results are returned as they are).
at::Tensor nan_where_invalid(const at::Tensor& result, const at::Tensor& invalid);

// The flat position of the first true element of a boolean mask with at least one (an error
// path: it reads the position back from the device).
int64_t first_true_position(const at::Tensor& mask);

}  // namespace ops
}  // namespace fusedloss
