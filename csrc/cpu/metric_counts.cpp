// CPU counting engine of the metrics: one pass over predictions and targets per update.
// Classification counts go to per-thread tables added up at the end (integer sums: the result
// does not depend on the order); regression moments are computed per fixed part of the rows in
// float64 and merged by the op layer.

#include "kernels/metric_counts.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "cpu/element_convert.h"

namespace fusedloss {
namespace cpu {
namespace {

constexpr int64_t kRowsPerPart = 1 << 16;

struct Tables {
  std::vector<int64_t> confusion, hits;
  int64_t invalid = 0, outside = 0;
};

// The index of the largest score, the first one on ties; NaN counts as the largest (torch.argmax).
// Branch-free selects: with random scores a branch per comparison mispredicts half the time.
template <typename scalar_t>
int64_t argmax(const scalar_t* x, int64_t classes) {
  int64_t best = 0;
  float best_value = load_as_acc(x[0]);
  bool has_nan = best_value != best_value;
  for (int64_t c = 1; c < classes; ++c) {
    const float v = load_as_acc(x[c]);
    const bool take = v > best_value;
    best_value = take ? v : best_value;
    best = take ? c : best;
    has_nan |= v != v;
  }
  if (has_nan) {  // rare: the first NaN wins
    for (int64_t c = 0; c < classes; ++c) {
      if (std::isnan(load_as_acc(x[c]))) return c;
    }
  }
  return best;
}

// The position of class t in the descending order of the scores (ties: lower index first).
template <typename scalar_t>
int64_t rank_of(const scalar_t* x, int64_t classes, int64_t t) {
  const float target_score = load_as_acc(x[t]);
  int64_t rank = 0;
  for (int64_t c = 0; c < classes; ++c) {
    const float v = load_as_acc(x[c]);
    rank += (v > target_score || (v == target_score && c < t)) ? 1 : 0;
  }
  return rank;
}

template <typename scalar_t>
void count_rows(const ClassificationSpec& spec, const ClassificationCounts& io, int64_t begin,
                int64_t end, Tables& tables) {
  constexpr bool kScores = !std::is_same_v<scalar_t, int64_t>;
  const int64_t C = spec.num_classes;
  const int64_t* target = io.target.const_data_ptr<int64_t>();
  for (int64_t r = begin; r < end; ++r) {
    const int64_t t = target[r];
    if (spec.has_ignore_index && t == spec.ignore_index) continue;
    if (t < 0 || t >= C) {
      ++tables.invalid;
      continue;
    }
    int64_t predicted;
    if constexpr (!kScores) {
      predicted = io.preds.const_data_ptr<int64_t>()[r];
      if (predicted < 0 || predicted >= C) {
        ++tables.invalid;
        continue;
      }
    } else if (spec.binary) {
      const float x = load_as_acc(io.preds.const_data_ptr<scalar_t>()[r]);
      tables.outside += (x >= 0.f && x <= 1.f) ? 0 : 1;
      const float probability = 1.f / (1.f + std::exp(-x));
      const int64_t as_probability = x > spec.threshold, as_logit = probability > spec.threshold;
      ++tables.confusion[t * 2 + as_probability];
      ++tables.confusion[4 + t * 2 + as_logit];
      continue;
    } else {
      const scalar_t* x = io.preds.const_data_ptr<scalar_t>() + r * C;
      predicted = argmax(x, C);
      if (spec.top_k > 1) tables.hits[t] += rank_of(x, C, t) < spec.top_k ? 1 : 0;
    }
    ++tables.confusion[t * C + predicted];
    if (spec.top_k == 1) tables.hits[t] += predicted == t ? 1 : 0;
  }
}

template <typename scalar_t>
void regression_part(const RegressionMoments& io, int64_t part) {
  const int64_t rows = io.preds.size(0), columns = io.preds.size(1);
  const scalar_t* p = io.preds.const_data_ptr<scalar_t>();
  const scalar_t* y = io.target.const_data_ptr<scalar_t>();
  double* out = io.partials.mutable_data_ptr<double>() + part * columns * kMomentCount;
  const int64_t begin = part * kRowsPerPart, end = std::min(rows, begin + kRowsPerPart);
  const double n = static_cast<double>(std::max<int64_t>(end - begin, 0));
  for (int64_t d = 0; d < columns; ++d) {
    // Two passes over the part (it stays in cache): the mean first, then squared deviations
    // from it — as stable as Welford's update, and without a division per element.
    double sum = 0, sse = 0, sae = 0;
#pragma omp simd reduction(+ : sum, sse, sae)
    for (int64_t r = begin; r < end; ++r) {
      const double yv = load_as_acc(y[r * columns + d]);
      const double err = yv - static_cast<double>(load_as_acc(p[r * columns + d]));
      sum += yv;
      sse += err * err;
      sae += std::abs(err);
    }
    const double mean = n > 0 ? sum / n : 0.0;
    double m2 = 0;
#pragma omp simd reduction(+ : m2)
    for (int64_t r = begin; r < end; ++r) {
      const double dev = static_cast<double>(load_as_acc(y[r * columns + d])) - mean;
      m2 += dev * dev;
    }
    double* m = out + d * kMomentCount;
    m[kCount] = n;
    m[kTargetMean] = mean;
    m[kTargetM2] = m2;
    m[kSquaredError] = sse;
    m[kAbsoluteError] = sae;
  }
}

}  // namespace

void classification_counts_kernel(const ClassificationSpec& spec, const ClassificationCounts& io) {
  std::mutex mutex;
  int64_t* confusion = io.confusion.mutable_data_ptr<int64_t>();
  int64_t* hits = io.top_k_hits.mutable_data_ptr<int64_t>();
  const auto run = [&](auto scalar) {
    using scalar_t = decltype(scalar);
    at::parallel_for(0, io.target.numel(), kRowsPerPart, [&](int64_t begin, int64_t end) {
      Tables tables;
      tables.confusion.assign(static_cast<size_t>(io.confusion.numel()), 0);
      tables.hits.assign(static_cast<size_t>(io.top_k_hits.numel()), 0);
      count_rows<scalar_t>(spec, io, begin, end, tables);
      const std::lock_guard<std::mutex> lock(mutex);
      for (size_t i = 0; i < tables.confusion.size(); ++i) confusion[i] += tables.confusion[i];
      for (size_t i = 0; i < tables.hits.size(); ++i) hits[i] += tables.hits[i];
      *io.invalid.mutable_data_ptr<int64_t>() += tables.invalid;
      *io.outside_unit.mutable_data_ptr<int64_t>() += tables.outside;
    });
  };
  if (spec.preds == PredictionKind::Labels) {
    run(int64_t{});
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, io.preds.scalar_type(),
                                    "fusedloss_classification_counts_cpu",
                                    [&] { run(scalar_t{}); });
  }
}

int64_t regression_partitions(int64_t rows) {
  return std::max<int64_t>(1, (rows + kRowsPerPart - 1) / kRowsPerPart);
}

void regression_moments_kernel(const RegressionMoments& io) {
  const int64_t parts = io.partials.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, io.preds.scalar_type(),
                                  "fusedloss_regression_moments_cpu", [&] {
                                    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
                                      for (int64_t p = begin; p < end; ++p) {
                                        regression_part<scalar_t>(io, p);
                                      }
                                    });
                                  });
}

}  // namespace cpu
}  // namespace fusedloss
