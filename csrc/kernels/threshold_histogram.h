#pragma once
// The counting engine of the binned threshold metrics (precision-recall curve, ROC, AUROC,
// average precision): per class, a histogram of the scores of its positives and of its negatives
// over the bins the thresholds cut, filled in one pass. A score s falls in bin b = the number of
// thresholds <= s (thresholds ascending), so "predicted positive at threshold i" (s >= t_i) is
// exactly the bins b > i: the confusion counts of every threshold are suffix sums, and the state,
// (C, 2, T + 1) integers, is independent of the number of samples and merged by addition.

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cstdint>

namespace fusedloss {

enum class ThresholdTask : int { Binary, Multiclass, Multilabel };

struct ThresholdHistogramSpec {
  ThresholdTask task = ThresholdTask::Binary;
  int64_t num_classes = 1;  // 1 for binary; C (multiclass) or L (multilabel)
  bool has_ignore_index = false;
  int64_t ignore_index = 0;
};

// One update. The histogram and the counter are accumulated into (the metric's state).
struct ThresholdHistogram {
  at::Tensor preds;         // binary (R); multiclass and multilabel (R, C); contiguous floating
  at::Tensor target;        // binary and multiclass (R); multilabel (R, C); int64 contiguous
  at::Tensor thresholds;    // (T) ascending, float64
  at::Tensor logits;        // () bool: the batch's scores are logits (sigmoid / softmax first)
  at::Tensor histogram;     // (C, 2, T + 1) int64: [class][0 negative, 1 positive][bin]
  at::Tensor invalid;       // () int64: targets that are not a label (nor ignore_index)
};

// The bin of a score: how many of the T ascending thresholds are <= it (0 for NaN).
template <typename T>
C10_HOST_DEVICE inline int64_t threshold_bin(T score, const double* thresholds, int64_t count) {
  int64_t low = 0, high = count;  // the answer is in [low, high]
  while (low < high) {
    const int64_t mid = (low + high) / 2;
    if (static_cast<double>(score) >= thresholds[mid]) {
      low = mid + 1;
    } else {
      high = mid;
    }
  }
  return low;
}

namespace cpu {
void threshold_histogram_kernel(const ThresholdHistogramSpec& spec, const ThresholdHistogram& io);
}  // namespace cpu
namespace cuda {
void threshold_histogram_kernel(const ThresholdHistogramSpec& spec, const ThresholdHistogram& io);
}  // namespace cuda

}  // namespace fusedloss
