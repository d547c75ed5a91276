#pragma once
// The math of multilabel_margin_loss, shared by the CPU and CUDA engines (engines/row_engines.h),
// written as torch's formula: for a row x of C scores with labels y_1..y_k (the target's entries
// before its first -1, repeats counted),
//   loss = Σ_j Σ_{i not a label} max(0, 1 - x[y_j] + x[i]) / C.
// The gradient of an active pair is +1/C at i and -1/C at y_j, so
//   d(loss)/dx[i] = #{j : pair (j, i) active} / C                      for a non-label i,
//   d(loss)/dx[c] = -(times c is a label) · #{i : pair (c, i) active} / C  for a label c.

#include <c10/macros/Macros.h>

namespace fusedloss {

// The hinge's argument for label score x_label and non-label score x_other, in torch's order.
template <typename T>
C10_HOST_DEVICE inline T multilabel_margin_term(T x_label, T x_other) {
  return T(1) - x_label + x_other;
}

}  // namespace fusedloss
