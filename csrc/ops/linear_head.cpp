// Chunking shared by the linear heads (ops/linear_head.h).

#include "ops/linear_head.h"

#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/Device.h>

#include <algorithm>

#include "engines/row_engines.h"  // cuda::device_memory_bytes

namespace fusedloss {
namespace ops {

using at::Tensor;

int64_t default_chunk_rows(int64_t rows, int64_t vocab, at::ScalarType dtype,
                           const at::Device& device) {
  const int64_t row_bytes = std::max<int64_t>(vocab, 1) * c10::elementSize(dtype);
#ifdef FUSEDLOSS_WITH_CUDA
  // On a GPU each chunk re-reads and re-writes the whole (V, H) weight gradient and runs a matmul
  // of chunk rows: far fewer, larger chunks, a 16th of the device's memory (64 MiB to 1 GiB). Of
  // its total, not its free memory: the chunks, and so the order in which the weight gradient is
  // summed, must not change from one step to the next.
  if (device.is_cuda()) {
    const int64_t bytes = std::clamp<int64_t>(cuda::device_memory_bytes(device.index()) / 16,
                                              int64_t{64} << 20, int64_t{1} << 30);
    return std::max<int64_t>(kMinChunkRows, bytes / row_bytes);
  }
#endif
  // On the CPU: a 32nd of the rows (no more than 32 MiB of logits), the one chunk held then no
  // larger than torch's own chunked path's, while every chunk's matmuls stay large enough.
  return std::max<int64_t>(kMinChunkRows, std::min(rows / 32, (int64_t{32} << 20) / row_bytes));
}

// One chunk's logits, xc @ w_t (+ b). On the CPU a chunk has few rows against many classes, and
// one matmul over all the classes ran slower than the same product taken in column blocks of
// about 4 MiB of weight each, written straight into the chunk (measured: N=4096, H=1024,
// V=32000, 128-row chunks, 2 threads: 2.2-2.6 s against 1.7-2.2 s over the 32 chunks).
Tensor chunk_logits(const Tensor& xc, const Tensor& w_t, const std::optional<Tensor>& b) {
  const int64_t cols = w_t.size(1);
  const int64_t block = std::max<int64_t>(
      256, (int64_t{4} << 20) / std::max<int64_t>(1, w_t.size(0) * w_t.element_size()));
  if (!xc.device().is_cpu() || cols <= 2 * block) {
    return b.has_value() ? at::addmm(*b, xc, w_t) : at::mm(xc, w_t);
  }
  Tensor logits = at::empty({xc.size(0), cols}, xc.options());
  for (int64_t first = 0; first < cols; first += block) {
    const int64_t n = std::min(block, cols - first);
    Tensor out = logits.narrow(1, first, n);  // rows of stride cols: the matmul writes in place
    if (b.has_value()) {
      at::addmm_out(out, b->narrow(0, first, n), xc, w_t.narrow(1, first, n));
    } else {
      at::mm_out(out, xc, w_t.narrow(1, first, n));
    }
  }
  return logits;
}

HeadGradients::HeadGradients(int64_t rows, int64_t hidden, int64_t vocab,
                             const at::TensorOptions& options, bool input, bool weight, bool bias)
    : options_(options) {
  const bool half = at::isReducedFloatingType(options.dtype().toScalarType());
  const auto sums = half ? options.dtype(at::kFloat) : options;
  if (input) input_ = at::empty({rows, hidden}, options);
  if (weight) weight_ = at::zeros({vocab, hidden}, sums);
  if (bias) bias_ = at::zeros({vocab}, sums);
}

void HeadGradients::add_chunk(const Tensor& g, const Tensor& xc, const Tensor& weight,
                              int64_t start) {
  if (input_.defined()) {
    Tensor rows = input_.narrow(0, start, g.size(0));  // contiguous: written in place
    at::mm_out(rows, g, weight);
  }
  if (weight_.defined()) {
    if (weight_.scalar_type() == g.scalar_type()) {
      weight_.addmm_(g.t(), xc);
    } else {
      weight_.add_(at::mm(g.t(), xc));
    }
  }
  if (bias_.defined()) bias_.add_(g.sum(0, /*keepdim=*/false, bias_.scalar_type()));
}

Tensor HeadGradients::none() const { return at::empty({0}, options_); }
Tensor HeadGradients::input() const { return input_.defined() ? input_ : none(); }
Tensor HeadGradients::weight() const {
  return weight_.defined() ? weight_.to(options_.dtype()) : none();
}
Tensor HeadGradients::bias() const { return bias_.defined() ? bias_.to(options_.dtype()) : none(); }

}  // namespace ops
}  // namespace fusedloss
