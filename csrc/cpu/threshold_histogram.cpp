// CPU engine of the binned threshold metrics (kernels/threshold_histogram.h): a part of the rows
// per thread fills its own histogram, added up at the end (integer sums: the result does not
// depend on the order or the thread count).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/element_convert.h"
#include "kernels/math.h"
#include "kernels/threshold_histogram.h"

namespace fusedloss {
namespace cpu {
namespace {

constexpr int64_t kRowsPerPart = 1 << 15;

template <typename scalar_t>
struct Rows {
  const scalar_t* preds;
  const int64_t* target;
  const double* thresholds;
  int64_t thresholds_count, classes;
  bool logits;
  const ThresholdHistogramSpec* spec;
};

template <typename scalar_t>
void fill_part(const Rows<scalar_t>& a, int64_t begin, int64_t end, int64_t* histogram,
               int64_t& invalid) {
  using acc = decltype(load_as_acc(std::declval<scalar_t>()));
  const int64_t bins = a.thresholds_count + 1, C = a.classes;
  const auto ignored = [&](int64_t t) {
    return a.spec->has_ignore_index && t == a.spec->ignore_index;
  };
  const auto count = [&](int64_t c, bool positive, acc score) {
    ++histogram[(c * 2 + (positive ? 1 : 0)) * bins +
                threshold_bin(score, a.thresholds, a.thresholds_count)];
  };
  if (a.spec->task == ThresholdTask::Multiclass) {
    std::vector<acc> row(static_cast<size_t>(C));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = a.target[r];
      if (ignored(t)) continue;
      if (t < 0 || t >= C) {
        ++invalid;
        continue;
      }
      const scalar_t* x = a.preds + r * C;
      for (int64_t c = 0; c < C; ++c) row[c] = load_as_acc(x[c]);
      if (a.logits) {  // softmax, as torchmetrics applies it to a batch of logits
        acc top = row[0];
        for (int64_t c = 1; c < C; ++c) top = std::max(top, row[c]);
        acc sum = 0;
        for (int64_t c = 0; c < C; ++c) sum += (row[c] = formulas::exp_of(row[c] - top));
        for (int64_t c = 0; c < C; ++c) row[c] /= sum;
      }
      for (int64_t c = 0; c < C; ++c) count(c, c == t, row[c]);
    }
    return;
  }
  // Binary (one column) and multilabel: every element is a score with its own 0/1 label.
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t t = a.target[r * C + c];
      if (ignored(t)) continue;
      if (t != 0 && t != 1) {
        ++invalid;
        continue;
      }
      const acc x = load_as_acc(a.preds[r * C + c]);
      count(c, t == 1, a.logits ? formulas::sigmoid(x) : x);
    }
  }
}

}  // namespace

void threshold_histogram_kernel(const ThresholdHistogramSpec& spec, const ThresholdHistogram& io) {
  const int64_t rows = io.target.size(0);
  if (rows == 0) return;
  // One histogram per part, no more parts than threads: many classes times many thresholds make
  // a large histogram, and it is not copied per 32K rows.
  const int64_t parts = std::min<int64_t>((rows + kRowsPerPart - 1) / kRowsPerPart,
                                          std::max<int64_t>(1, at::get_num_threads()));
  const int64_t rows_per_part = (rows + parts - 1) / parts;
  const at::Tensor part_histograms =
      at::zeros({parts, io.histogram.numel()}, io.histogram.options());
  std::vector<int64_t> part_invalid(static_cast<size_t>(parts), 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, io.preds.scalar_type(), "fusedloss_threshold_histogram_cpu", [&] {
        const Rows<scalar_t> a{io.preds.const_data_ptr<scalar_t>(),
                               io.target.const_data_ptr<int64_t>(),
                               io.thresholds.const_data_ptr<double>(),
                               io.thresholds.numel(),
                               spec.num_classes,
                               io.logits.item<bool>(),
                               &spec};
        int64_t* histograms = part_histograms.mutable_data_ptr<int64_t>();
        at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
          for (int64_t p = first; p < last; ++p) {
            fill_part(a, p * rows_per_part, std::min(rows, (p + 1) * rows_per_part),
                      histograms + p * io.histogram.numel(), part_invalid[p]);
          }
        });
      });
  io.histogram.add_(part_histograms.sum(0).view_as(io.histogram));
  int64_t invalid = 0;
  for (int64_t v : part_invalid) invalid += v;
  io.invalid.add_(invalid);
}

}  // namespace cpu
}  // namespace fusedloss
