#pragma once
// What the linear heads (linear_cross_entropy, linear_log_probs, linear_jsd) share: the rows of
// input taken per chunk, and one chunk's logits from a matmul. Never more than a chunk of (rows,
// V) logits is held.

#include <ATen/core/Tensor.h>

#include <optional>

namespace fusedloss {
namespace ops {

// chunk_size=None: on the CPU a 32nd of the rows, with no more than 32 MiB of logits; on CUDA the
// rows whose logits take a 16th of the device's memory (64 MiB to 1 GiB); and at least this many
// rows (a matmul of fewer rows runs far below the machine's peak).
constexpr int64_t kMinChunkRows = 128;
int64_t default_chunk_rows(int64_t rows, int64_t vocab, at::ScalarType dtype,
                           const at::Device& device);

// One chunk's logits, xc (rows, H) @ w_t (H, V) (+ b (V)), in xc's dtype.
at::Tensor chunk_logits(const at::Tensor& xc, const at::Tensor& w_t,
                        const std::optional<at::Tensor>& b);

}  // namespace ops
}  // namespace fusedloss
