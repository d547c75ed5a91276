// CPU counting engine of the metrics: one pass over predictions and targets per update.
// Classification counts go to per-thread tables added up at the end, or for many classes to one
// outcome per row added up by one thread (integer sums either way: the result does not depend on
// the order); regression moments are computed per fixed part of the rows in
// float64 and merged by the op layer.

#include "kernels/metric_counts.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/element_convert.h"

namespace fusedloss {
namespace cpu {
namespace {

constexpr int64_t kRowsPerPart = 1 << 16;
// Per-thread tables up to this size (C <= 724 for a C x C table of int64); above it, each row's
// outcome goes to a buffer of one entry per row, added up by one thread. A table per thread for
// C = 10000 would be 800 MB each.
constexpr int64_t kTableBytesPerThread = 4 << 20;

// The score type's accumulation type: float for half, bfloat16 and float, double for double
// (float64 scores are compared as float64: rounding them could make distinct scores tie).
template <typename scalar_t>
using acc_of = decltype(load_as_acc(std::declval<scalar_t>()));

// The index of the largest score, the first one on ties; NaN counts as the largest (torch.argmax).
// Branch-free selects: with random scores a branch per comparison mispredicts half the time.
template <typename scalar_t>
int64_t argmax(const scalar_t* x, int64_t classes) {
  using acc_t = acc_of<scalar_t>;
  int64_t best = 0;
  acc_t best_value = load_as_acc(x[0]);
  bool has_nan = best_value != best_value;
  for (int64_t c = 1; c < classes; ++c) {
    const acc_t v = load_as_acc(x[c]);
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
  using acc_t = acc_of<scalar_t>;
  const acc_t target_score = load_as_acc(x[t]);
  int64_t rank = 0;
  for (int64_t c = 0; c < classes; ++c) {
    const acc_t v = load_as_acc(x[c]);
    rank += (v > target_score || (v == target_score && c < t)) ? 1 : 0;
  }
  return rank;
}

// Where a thread's counts go while it reads its rows: its own tables.
struct Tables {
  std::vector<int64_t> confusion, hits;
  int64_t invalid = 0, outside = 0;
  int64_t classes = 0;
  void count(int64_t /*row*/, int64_t t, int64_t predicted, bool hit) {
    ++confusion[t * classes + predicted];
    hits[t] += hit ? 1 : 0;
  }
  void count_invalid(int64_t /*row*/) { ++invalid; }
};

// Or each row's outcome, for one thread to add up after the parallel pass (large C).
constexpr int64_t kSkipped = -1, kInvalid = -2;
struct RowOutcomes {
  int64_t* predicted;  // a class, kSkipped (ignored target) or kInvalid; kSkipped by default
  uint8_t* hit;
  int64_t outside = 0;  // unused: binary tasks always use tables
  void count(int64_t row, int64_t /*t*/, int64_t p, bool h) {
    predicted[row] = p;
    hit[row] = h ? 1 : 0;
  }
  void count_invalid(int64_t row) { predicted[row] = kInvalid; }
};

template <typename scalar_t, typename Sink>
void count_rows(const ClassificationSpec& spec, const ClassificationCounts& io, int64_t begin,
                int64_t end, Sink& sink) {
  constexpr bool kScores = !std::is_same_v<scalar_t, int64_t>;
  const int64_t C = spec.num_classes;
  const int64_t* target = io.target.const_data_ptr<int64_t>();
  for (int64_t r = begin; r < end; ++r) {
    const int64_t t = target[r];
    if (spec.has_ignore_index && t == spec.ignore_index) continue;
    if (t < 0 || t >= C) {
      sink.count_invalid(r);
      continue;
    }
    int64_t predicted;
    bool hit;
    if constexpr (!kScores) {
      predicted = io.preds.const_data_ptr<int64_t>()[r];
      if (predicted < 0 || predicted >= C) {
        sink.count_invalid(r);
        continue;
      }
      hit = predicted == t;
    } else if (spec.binary) {
      if constexpr (std::is_same_v<Sink, Tables>) {
        using acc_t = acc_of<scalar_t>;
        const acc_t x = load_as_acc(io.preds.const_data_ptr<scalar_t>()[r]);
        sink.outside += (x >= acc_t(0) && x <= acc_t(1)) ? 0 : 1;
        const acc_t probability = acc_t(1) / (acc_t(1) + std::exp(-x));
        const int64_t as_probability = x > spec.threshold, as_logit = probability > spec.threshold;
        ++sink.confusion[t * 2 + as_probability];
        ++sink.confusion[4 + t * 2 + as_logit];
      }
      continue;
    } else {
      const scalar_t* x = io.preds.const_data_ptr<scalar_t>() + r * C;
      predicted = argmax(x, C);
      hit = spec.top_k > 1 ? rank_of(x, C, t) < spec.top_k : predicted == t;
    }
    sink.count(r, t, predicted, hit);
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
  int64_t* confusion = io.confusion.mutable_data_ptr<int64_t>();
  int64_t* hits = io.top_k_hits.mutable_data_ptr<int64_t>();
  int64_t* invalid = io.invalid.mutable_data_ptr<int64_t>();
  const int64_t rows = io.target.numel();
  const bool small_tables = io.confusion.numel() * 8 <= kTableBytesPerThread;
  const auto run = [&](auto scalar) {
    using scalar_t = decltype(scalar);
    if (small_tables) {
      std::mutex mutex;
      at::parallel_for(0, rows, kRowsPerPart, [&](int64_t begin, int64_t end) {
        Tables tables;
        tables.classes = spec.binary ? 2 : spec.num_classes;
        tables.confusion.assign(static_cast<size_t>(io.confusion.numel()), 0);
        tables.hits.assign(static_cast<size_t>(io.top_k_hits.numel()), 0);
        count_rows<scalar_t>(spec, io, begin, end, tables);
        const std::lock_guard<std::mutex> lock(mutex);
        for (size_t i = 0; i < tables.confusion.size(); ++i) confusion[i] += tables.confusion[i];
        for (size_t i = 0; i < tables.hits.size(); ++i) hits[i] += tables.hits[i];
        *invalid += tables.invalid;
        *io.outside_unit.mutable_data_ptr<int64_t>() += tables.outside;
      });
      return;
    }
    // Large C (multiclass only): 9 bytes per row instead of a C x C table per thread.
    std::vector<int64_t> predicted(static_cast<size_t>(rows), kSkipped);
    std::vector<uint8_t> hit(static_cast<size_t>(rows), 0);
    at::parallel_for(0, rows, kRowsPerPart, [&](int64_t begin, int64_t end) {
      RowOutcomes outcomes{predicted.data(), hit.data()};
      count_rows<scalar_t>(spec, io, begin, end, outcomes);
    });
    const int64_t* target = io.target.const_data_ptr<int64_t>();
    const int64_t C = spec.num_classes;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t p = predicted[static_cast<size_t>(r)];
      if (p == kSkipped) continue;
      if (p == kInvalid) {
        ++*invalid;
        continue;
      }
      ++confusion[target[r] * C + p];
      hits[target[r]] += hit[static_cast<size_t>(r)];
    }
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
