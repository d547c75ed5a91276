#pragma once
// What the linear heads (linear_cross_entropy, linear_log_probs, linear_jsd) share: the rows of
// input taken per chunk, one chunk's logits from a matmul, and the head's gradients from each
// chunk's logit gradient. Never more than a chunk of (rows, V) logits is held.

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

// The gradients of a head's input (rows, H), weight (V, H) and bias (V), the ones asked for,
// filled a chunk of rows at a time from the gradient of that chunk's logits: the input's rows
// written once; the weight's and the bias's summed over the chunks, in float32 for float16 and
// bfloat16 (one rounding per chunk, none in the sum), returned in the input's dtype.
class HeadGradients {
 public:
  HeadGradients(int64_t rows, int64_t hidden, int64_t vocab, const at::TensorOptions& options,
                bool input, bool weight, bool bias);
  // g (len, V): the loss's gradient w.r.t. the logits of rows [start, start + len); xc those
  // rows of the input (len, H); weight the head (V, H).
  void add_chunk(const at::Tensor& g, const at::Tensor& xc, const at::Tensor& weight,
                 int64_t start);
  // Each gradient, or a new empty tensor where it was not asked for (outputs of an op must not
  // alias each other).
  at::Tensor input() const;
  at::Tensor weight() const;
  at::Tensor bias() const;

 private:
  at::Tensor none() const;

  at::TensorOptions options_;
  at::Tensor input_, weight_, bias_;
};

}  // namespace ops
}  // namespace fusedloss
