// Operator layer of the vocab-parallel cross entropy's local work (engines/vocab_shard.h): the
// argument checks, the CPU and CUDA kernels, and the shapes for torch.compile (Meta).
// fusedloss/vocab_parallel.py calls them between its collectives.

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "engines/vocab_shard.h"
#include "ops/arguments.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
constexpr const char* kOp = "fusedloss._vocab_shard";

VocabShardOperands check(const Tensor& logits, const Tensor& target,
                         const std::optional<Tensor>& smoothing, std::optional<double> softcap) {
  TORCH_CHECK_VALUE(logits.dim() == 2 && is_supported_dtype(logits.scalar_type()), kOp,
                    ": logits must be (N, V_rank) of float32, float64, float16 or bfloat16, got ",
                    logits.scalar_type(), " of shape ", logits.sym_sizes());
  TORCH_CHECK_VALUE(target.dim() == 1 && target.sym_size(0) == logits.sym_size(0) &&
                        target.scalar_type() == at::kLong,
                    kOp, ": target must be (N) int64 for logits of shape ", logits.sym_sizes(),
                    ", got ", target.scalar_type(), " of shape ", target.sym_sizes());
  const auto acc = accumulation_dtype(logits.scalar_type());
  if (smoothing.has_value()) {
    TORCH_CHECK_VALUE(smoothing->dim() == 1 && smoothing->sym_size(0) == logits.sym_size(1) &&
                          smoothing->scalar_type() == acc,
                      kOp, ": smoothing must be (V_rank) of ", acc, ", got ",
                      smoothing->scalar_type(), " of shape ", smoothing->sym_sizes());
  }
  TORCH_CHECK_VALUE(!softcap.has_value() || (*softcap > 0 && std::isfinite(*softcap)), kOp,
                    ": softcap must be positive and finite (or None), got ", softcap.value_or(0));
  // A CUDA block per row: the grid's x dimension holds at most 2^31 - 1 rows.
  TORCH_CHECK_VALUE(logits.sym_size(0) <= std::numeric_limits<int32_t>::max(), kOp,
                    ": at most 2^31 - 1 rows, got ", logits.sym_size(0));
  TORCH_CHECK(logits.device() == target.device() &&
                  (!smoothing.has_value() || smoothing->device() == logits.device()),
              kOp, ": logits, target and smoothing must be on one device, got ", logits.device(),
              ", ", target.device(), smoothing.has_value() ? " and " : "",
              smoothing.has_value() ? smoothing->device().str() : "");
  return {logits.contiguous(), target.contiguous(),
          smoothing.has_value() ? smoothing->contiguous() : Tensor(), softcap.value_or(0)};
}

void check_row_vector(const char* name, const Tensor& t, const Tensor& logits) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.sym_size(0) == logits.sym_size(0) &&
                        t.scalar_type() == accumulation_dtype(logits.scalar_type()),
                    kOp, ": ", name, " must be (N) of ", accumulation_dtype(logits.scalar_type()),
                    ", got ", t.scalar_type(), " of shape ", t.sym_sizes());
}

template <Tensor (*kernel)(const VocabShardOperands&)>
Tensor stats_on_device(const Tensor& logits, const Tensor& target,
                       const std::optional<Tensor>& smoothing, std::optional<double> softcap) {
  return kernel(check(logits, target, smoothing, softcap));
}

void check_row_vectors(const Tensor& logits, const Tensor& lse, const Tensor& p_scale,
                       const Tensor& q_scale, const Tensor& target_scale) {
  for (const auto& [name, t] : {std::pair<const char*, const Tensor&>{"lse", lse},
                                {"p_scale", p_scale}, {"q_scale", q_scale},
                                {"target_scale", target_scale}}) {
    check_row_vector(name, t, logits);
    TORCH_CHECK(t.device() == logits.device(), kOp, ": ", name, " must be on ", logits.device(),
                ", got ", t.device());
  }
}

Tensor stats_meta(const Tensor& logits, const Tensor& target,
                  const std::optional<Tensor>& smoothing, std::optional<double> softcap) {
  check(logits, target, smoothing, softcap);
  return at::empty_symint({logits.sym_size(0), 4},
                          logits.options().dtype(accumulation_dtype(logits.scalar_type())));
}

using GradientKernel = Tensor (*)(const VocabShardOperands&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&);

template <GradientKernel kernel>
Tensor gradient_on_device(const Tensor& logits, const Tensor& target,
                          const std::optional<Tensor>& smoothing, std::optional<double> softcap,
                          const Tensor& lse, const Tensor& p_scale, const Tensor& q_scale,
                          const Tensor& target_scale) {
  const VocabShardOperands o = check(logits, target, smoothing, softcap);
  check_row_vectors(logits, lse, p_scale, q_scale, target_scale);
  return kernel(o, lse.contiguous(), p_scale.contiguous(), q_scale.contiguous(),
                target_scale.contiguous());
}

Tensor gradient_meta(const Tensor& logits, const Tensor& target,
                     const std::optional<Tensor>& smoothing, std::optional<double> softcap,
                     const Tensor& lse, const Tensor& p_scale, const Tensor& q_scale,
                     const Tensor& target_scale) {
  check(logits, target, smoothing, softcap);
  check_row_vectors(logits, lse, p_scale, q_scale, target_scale);
  return at::empty_symint(logits.sym_sizes(), logits.options());
}

}  // namespace
}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def("_vocab_shard_stats(Tensor logits, Tensor target, Tensor? smoothing, float? softcap) -> Tensor");
  m.def(
      "_vocab_shard_gradient(Tensor logits, Tensor target, Tensor? smoothing, float? softcap, "
      "Tensor lse, Tensor p_scale, Tensor q_scale, Tensor target_scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  using namespace fusedloss;
  m.impl("_vocab_shard_stats", TORCH_FN(ops::stats_on_device<cpu::vocab_shard_stats_kernel>));
  m.impl("_vocab_shard_gradient",
         TORCH_FN(ops::gradient_on_device<cpu::vocab_shard_gradient_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  using namespace fusedloss;
  m.impl("_vocab_shard_stats", TORCH_FN(ops::stats_on_device<cuda::vocab_shard_stats_kernel>));
  m.impl("_vocab_shard_gradient",
         TORCH_FN(ops::gradient_on_device<cuda::vocab_shard_gradient_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_vocab_shard_stats", TORCH_FN(fusedloss::ops::stats_meta));
  m.impl("_vocab_shard_gradient", TORCH_FN(fusedloss::ops::gradient_meta));
}
