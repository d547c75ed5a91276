#pragma once
// The CTC engines' interface (formulas: kernels/ctc.h), implemented once for the CPU (csrc/cpu/)
// and once for CUDA (cuda/). The operator layer (ops/ctc_loss.cpp) checks shapes and, where the
// lengths are on the host, the lengths and labels; the engine runs the alpha and beta recursions
// of every sample and writes its loss and, when asked, its gradient, in one call.

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fusedloss {

struct CtcOperands {
  at::Tensor log_probs;       // (T, N, C), classes contiguous (time and batch strides any)
  at::Tensor targets;         // int64, contiguous: (N, S) padded or (sum of target_lengths)
  at::Tensor input_lengths;   // (N) int64, on log_probs' device
  at::Tensor target_lengths;  // (N) int64, on log_probs' device
  int64_t blank = 0;
  bool concatenated = false;  // targets is 1-D: sample n's labels follow sample n-1's
  bool zero_infinity = false;
  bool mean = false;            // reduction 'mean': a sample's term is nll / max(L, 1) / N
  double gradient_scale = 1;    // the gradient's factor besides 'mean''s 1 / max(L, 1)
  int64_t lattice_width = 0;    // CUDA: the widest 2L + 1 a workspace row must hold

  at::Tensor nll;         // out (N) accumulation dtype: -log p(target | input), zero_infinity applied
  at::Tensor loss_terms;  // out (N) accumulation dtype: what the reduction sums
  at::Tensor grad;        // out (T, N, C) contiguous, of log_probs' dtype, or undefined
};

namespace cpu {
// Parallel over the samples; a sample's lattice lives in its thread's scratch (T_n x (2L + 1)
// alphas), never in a tensor. Results do not depend on the number of threads.
void ctc_kernel(const CtcOperands& o);
}  // namespace cpu

namespace cuda {
// A block per sample; checks the lengths and labels on the device (deferred errors).
void ctc_kernel(const CtcOperands& o);
}  // namespace cuda

}  // namespace fusedloss
