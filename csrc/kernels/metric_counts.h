#pragma once
// The counting engine of the metrics: the spec and operands the CPU and CUDA kernels share (the
// classification counts: a confusion matrix and top-k hits; the regression moments), and the
// kernels' declarations.

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cstdint>

namespace fusedloss {

// How the predictions of a classification batch are read.
enum class PredictionKind {
  Labels,  // integer class labels (N, ...)
  Scores,  // multiclass: float scores (R, C), argmax / top-k; binary: float, thresholded
};

struct ClassificationSpec {
  bool binary = false;
  int64_t num_classes = 2;
  PredictionKind preds = PredictionKind::Labels;
  double threshold = 0.5;  // binary scores: probability threshold
  int64_t top_k = 1;       // multiclass scores
  bool has_ignore_index = false;
  int64_t ignore_index = 0;
};

// Inputs and outputs of one update. All counts int64, zero-initialized by the caller.
struct ClassificationCounts {
  at::Tensor preds;   // (R) labels or binary scores, or (R, C) multiclass scores; contiguous
  at::Tensor target;  // (R) int64
  // multiclass: (C, C) [target][prediction]; binary: (2, 2, 2) [reading][target][prediction],
  // reading 0 = scores as probabilities, 1 = as logits (sigmoid first): the op layer picks one
  // per batch on the device, as torchmetrics does, without reading anything back.
  at::Tensor confusion;
  at::Tensor top_k_hits;    // multiclass: (C) per target class, rank of the target < top_k
  at::Tensor invalid;       // (): labels outside [0, C) (targets, or predicted labels)
  at::Tensor outside_unit;  // (): binary scores outside [0, 1] (or NaN): the batch is logits
};

// Per output column of a regression batch, what the metrics need, in float64: count, mean and
// sum of squared deviations of the target (merged with Chan's formula: stable, unlike
// sum(y^2) - sum(y)^2 / n), and the sums of squared and absolute errors.
constexpr int kMomentCount = 5;
enum Moment { kCount = 0, kTargetMean, kTargetM2, kSquaredError, kAbsoluteError };

struct RegressionMoments {
  at::Tensor preds, target;  // (N, D) contiguous, same floating dtype
  at::Tensor partials;       // (P, D, 5) float64: one set of moments per part of the rows
};

namespace cpu {
void classification_counts_kernel(const ClassificationSpec& spec, const ClassificationCounts& io);
int64_t regression_partitions(int64_t rows);
void regression_moments_kernel(const RegressionMoments& io);
}  // namespace cpu
namespace cuda {
void classification_counts_kernel(const ClassificationSpec& spec, const ClassificationCounts& io);
int64_t regression_partitions(int64_t rows);
void regression_moments_kernel(const RegressionMoments& io);
}  // namespace cuda

}  // namespace fusedloss
