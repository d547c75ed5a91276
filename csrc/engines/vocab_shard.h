#pragma once
// The local work of the vocab-parallel cross entropy (fusedloss/vocab_parallel.py) on one rank's
// shard of the logits, (N, V_rank) contiguous rows, in two passes around the collective that
// merges every rank's statistics. Implemented for the CPU (csrc/cpu/) and CUDA (cuda/); other
// devices take the same formulas from ATen ops (fusedloss/vocab_parallel.py).

#include <ATen/core/Tensor.h>

namespace fusedloss {

struct VocabShardOperands {
  at::Tensor logits;     // (N, V_rank), contiguous
  at::Tensor target;     // (N) int64: the target's index in this shard (outside [0, V_rank): elsewhere)
  at::Tensor smoothing;  // (V_rank) accumulation dtype: q_c, the label-smoothing weights; or undefined
  double softcap = 0;    // 0: none; else the logits are softcap * tanh(x / softcap)
};

namespace cpu {

// (N, 4) in the accumulation dtype, per row of the (softcapped) logits x: max_c x_c, the sum of
// exp(x_c - max) (max taken as 0 for a row of -inf), x_t where this shard holds the target (else
// 0), and the sum of q_c x_c (0 without smoothing). Each row read once from memory.
at::Tensor vocab_shard_stats_kernel(const VocabShardOperands& o);

// The gradient of the shard, (N, V_rank) of the logits' dtype:
//   (exp(x_c - lse) p_scale - q_c q_scale - [c = t] target_scale) * d x_c / d logit_c
// with lse, p_scale, q_scale and target_scale (N) in the accumulation dtype.
at::Tensor vocab_shard_gradient_kernel(const VocabShardOperands& o, const at::Tensor& lse,
                                       const at::Tensor& p_scale, const at::Tensor& q_scale,
                                       const at::Tensor& target_scale);

}  // namespace cpu

namespace cuda {  // the same on a CUDA device (a block per row)
at::Tensor vocab_shard_stats_kernel(const VocabShardOperands& o);
at::Tensor vocab_shard_gradient_kernel(const VocabShardOperands& o, const at::Tensor& lse,
                                       const at::Tensor& p_scale, const at::Tensor& q_scale,
                                       const at::Tensor& target_scale);
}  // namespace cuda
}  // namespace fusedloss
