// CPU row engine of the cross entropy (see kernels/multiclass_loss.h for the formulas).
//
// Rows are split over threads. Class-index rows of at most 12 classes go 64 rows at a time with
// vector lanes across rows (lanes_range); of at most 128 classes a tile at a time (tile_range: exp
// over the whole tile at once); any other row is done by one thread in three sweeps:
//   A. the max of the logits (read 1);
//   B. e_c = exp(x'_c - max) into a per-thread scratch row, with the sums (read 2);
//   C. the gradient from the scratch row (written once), only when a gradient is asked for.
// exp is computed once per logit. A row of up to ~64K float32 logits stays in L2 between the
// sweeps. A whole cross_entropy call first reads the targets (the bad-index check, raised at once,
// and the denominators of 'mean'), then the rows, then sums the per-row values in row order, so
// the loss is the same for any thread count.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <limits>
#include <utility>
#include <vector>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "cpu/vector_math.h"       // SIMD (libmvec) declarations of exp/log/tanh
#include "engines/row_engines.h"
#include "kernels/multiclass_loss.h"
#include "engines/bad_values.h"

namespace fusedloss {
namespace cpu {
namespace {

using formulas::softcap_slope;
using formulas::softcapped;

template <typename scalar_t>
struct Rows {
  using acc = acc_t<scalar_t>;
  int64_t num_classes;
  const scalar_t* logits;
  const int64_t* target_index;  // class-index targets
  const scalar_t* target_prob;  // probability targets
  const acc* weight;            // C values (ones when the op has no weight)
  acc* row_loss;
  acc* row_z_loss;  // nullptr when z_loss == 0
  scalar_t* grad_input;
  scalar_t* grad_target;
  int64_t ignore_index;
  acc smoothing, z_loss, cap, scale, z_scale;
};

// Fills a row that takes no part in the loss (ignored target: 0) or cannot (target out of range
// with the check off: NaN, never an access out of bounds).
template <typename scalar_t>
void fill_row(const Rows<scalar_t>& a, int64_t r, acc_t<scalar_t> value) {
  a.row_loss[r] = value;
  if (a.row_z_loss) a.row_z_loss[r] = value;
  if (!a.grad_input) return;
  scalar_t* g = a.grad_input + r * a.num_classes;
  const scalar_t v = store_from_acc<scalar_t>(value);
  for (int64_t c = 0; c < a.num_classes; ++c) g[c] = v;
}

// kSpread: the row has q terms (probability targets, or label smoothing). A template argument, not
// a runtime flag, so the loops stay branch-free and vectorize.
template <typename scalar_t, bool kProb, bool kCap, bool kGrad, bool kSpread>
FUSEDLOSS_CPU_CLONES void rows_range(const Rows<scalar_t>& a, int64_t begin, int64_t end,
                                     acc_t<scalar_t>* e) {
  using acc = acc_t<scalar_t>;
  const int64_t C = a.num_classes;
  const acc cap = a.cap;
  const acc* w = a.weight;
  // Probability targets: q_c = w_c (keep * y_c + spread); class indices: q_c = spread * w_c.
  const acc spread = a.smoothing / static_cast<acc>(C);
  const acc keep = acc(1) - a.smoothing;
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* x = a.logits + r * C;
    const scalar_t* y = kProb ? a.target_prob + r * C : nullptr;
    int64_t t = -1;
    acc hard = 0, target_logit = 0;
    if constexpr (!kProb) {
      t = a.target_index[r];
      if (t == a.ignore_index) {
        fill_row(a, r, acc(0));
        continue;
      }
      if (t < 0 || t >= C) {
        fill_row(a, r, std::numeric_limits<acc>::quiet_NaN());
        continue;
      }
      hard = keep * w[t];
      target_logit = softcapped(load_as_acc(x[t]), cap);
    }

    acc max = -std::numeric_limits<acc>::infinity();
#pragma omp simd reduction(max : max)
    for (int64_t c = 0; c < C; ++c) {
      const acc v = load_as_acc(x[c]);
      max = v > max ? v : max;  // NaN is skipped here and propagates through the sum below
    }
    if constexpr (kCap) max = softcapped(max, cap);  // the cap is monotonic

    acc sum = 0, q_total = 0, q_dot_x = 0;
#pragma omp simd reduction(+ : sum, q_total, q_dot_x)
    for (int64_t c = 0; c < C; ++c) {
      acc v = load_as_acc(x[c]);
      if constexpr (kCap) v = cap * formulas::tanh_of(v / cap);  // softcapped(), cap > 0 known
      const acc ec = formulas::exp_of(v - max);
      sum += ec;
      if constexpr (kGrad) e[c] = ec;
      if constexpr (kSpread) {  // without, no 0 * -inf from an -inf logit
        const acc q = formulas::cross_entropy_q<kProb>(w[c], kProb ? load_as_acc(y[c]) : acc(0),
                                                       keep, spread);
        q_total += q;
        q_dot_x += q * v;
      }
    }
    const auto row = formulas::cross_entropy_row<acc>(max, sum, q_total, q_dot_x, hard,
                                                      target_logit, a.z_loss, a.scale, a.z_scale);
    a.row_loss[r] = row.loss;
    if (a.row_z_loss) a.row_z_loss[r] = row.z_loss;
    if constexpr (!kGrad) continue;

    scalar_t* g = a.grad_input + r * C;
    scalar_t* gt = kProb && a.grad_target ? a.grad_target + r * C : nullptr;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      acc gc = e[c] * row.p_scale;
      if constexpr (kSpread) {
        gc -= formulas::cross_entropy_q<kProb>(w[c], kProb ? load_as_acc(y[c]) : acc(0), keep,
                                               spread) *
              row.q_scale;
      }
      if constexpr (kCap)
        gc *= softcap_slope(cap * formulas::tanh_of(load_as_acc(x[c]) / cap), cap);
      g[c] = store_from_acc<scalar_t>(gc);
    }
    if constexpr (!kProb) {
      const acc q = formulas::cross_entropy_q<false>(w[t], acc(0), keep, spread);
      g[t] = store_from_acc<scalar_t>((e[t] * row.p_scale - q * row.q_scale - row.target_scale) *
                                      softcap_slope(target_logit, cap));
    } else if (gt) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const acc v = softcapped(load_as_acc(x[c]), cap);
        gt[c] = store_from_acc<scalar_t>(
            formulas::cross_entropy_target_grad(w[c], keep, row.lse, v, row.q_scale));
      }
    }
  }
}

// Class-index rows of few classes (C <= kTileClasses, no softcap), a tile of rows at a time: the
// per-row loops are too short to vectorize, so exp runs over the whole tile's (x - row max) at
// once, and only the cheap per-row sums stay scalar. Tiles lie on a fixed grid of rows (see
// for_each_block), and the vector loops over a tile run over whole vectors (zero padding): an
// element is never computed by a loop's scalar remainder, whose exp/log may differ in the last
// bit from the vector one, so a row's values depend neither on the thread count nor the batch.
constexpr int64_t kLaneClasses = 12;  // the lanes path below takes C <= 12, the tiles the rest
constexpr int64_t kTileClasses = 128;
constexpr int64_t kTileElements = 4096;
constexpr int64_t kVectorPad = 16;  // a multiple of every clone's vector width in elements

constexpr int64_t padded(int64_t n) { return (n + kVectorPad - 1) / kVectorPad * kVectorPad; }
constexpr int64_t kMaxTileRows = padded(kTileElements / (kLaneClasses + 1));

template <typename scalar_t, bool kGrad, bool kSpread>
FUSEDLOSS_CPU_CLONES void tile_range(const Rows<scalar_t>& a, int64_t begin, int64_t end) {
  using acc = acc_t<scalar_t>;
  const int64_t C = a.num_classes, tile_rows = kTileElements / C;  // C > kLaneClasses
  const acc* w = a.weight;
  const acc spread = a.smoothing / static_cast<acc>(C);
  const acc keep = acc(1) - a.smoothing;
  alignas(64) acc e[kTileElements + kVectorPad];
  alignas(64) acc row_max[kMaxTileRows], row_sum[kMaxTileRows], row_log_sum[kMaxTileRows];
  for (int64_t first = begin; first < end; first += tile_rows) {
    const int64_t rows = std::min(tile_rows, end - first), n = rows * C;
    const scalar_t* x = a.logits + first * C;
    for (int64_t i = 0; i < rows; ++i) {
      acc m = -std::numeric_limits<acc>::infinity();
#pragma omp simd reduction(max : m)
      for (int64_t c = 0; c < C; ++c) {
        const acc v = load_as_acc(x[i * C + c]);
        m = v > m ? v : m;  // NaN is skipped here and propagates through the sum below
      }
      row_max[i] = m;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) e[i * C + c] = load_as_acc(x[i * C + c]) - m;
    }
    for (int64_t k = n; k < padded(n); ++k) e[k] = 0;
#pragma omp simd
    for (int64_t k = 0; k < padded(n); ++k) e[k] = formulas::exp_of(e[k]);
    for (int64_t i = 0; i < rows; ++i) {
      acc sum = 0;
      const acc* er = e + i * C;
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < C; ++c) sum += er[c];
      row_sum[i] = sum;
    }
    for (int64_t i = rows; i < padded(rows); ++i) row_sum[i] = 1;
#pragma omp simd
    for (int64_t i = 0; i < padded(rows); ++i) row_log_sum[i] = formulas::log_of(row_sum[i]);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t r = first + i, t = a.target_index[r];
      if (t == a.ignore_index || t < 0 || t >= C) {
        fill_row(a, r, t == a.ignore_index ? acc(0) : std::numeric_limits<acc>::quiet_NaN());
        continue;
      }
      const acc* er = e + i * C;
      acc q_total = 0, q_dot_x = 0;
      if constexpr (kSpread) {
#pragma omp simd reduction(+ : q_total, q_dot_x)
        for (int64_t c = 0; c < C; ++c) {
          const acc q = spread * w[c];
          q_total += q;
          q_dot_x += q * load_as_acc(x[i * C + c]);
        }
      }
      const acc target_logit = load_as_acc(x[i * C + t]);
      const auto row = formulas::cross_entropy_row_from_log<acc>(
          row_max[i], row_sum[i], row_log_sum[i], q_total, q_dot_x, keep * w[t], target_logit,
          a.z_loss, a.scale, a.z_scale);
      a.row_loss[r] = row.loss;
      if (a.row_z_loss) a.row_z_loss[r] = row.z_loss;
      if constexpr (kGrad) {
        scalar_t* g = a.grad_input + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          acc gc = er[c] * row.p_scale;
          if constexpr (kSpread) gc -= spread * w[c] * row.q_scale;
          g[c] = store_from_acc<scalar_t>(gc);
        }
        const acc q_t = kSpread ? spread * w[t] : acc(0);
        g[t] = store_from_acc<scalar_t>(er[t] * row.p_scale - q_t * row.q_scale -
                                        row.target_scale);
      }
    }
  }
}

// Class-index rows of very few classes (C <= kLaneClasses, no softcap): vector lanes across
// rows. A block of kLaneRows rows is walked class by class, so that every step (max, exp, sums,
// the gradient) is one vector operation over the block's rows instead of a loop too short to
// vectorize per row. `e` holds the block's exps, class-major. Each row's sums still run over its
// classes in order, and a block short of kLaneRows rows is padded with zero logits so that every
// loop runs over all lanes (no scalar remainder, whose exp may differ in the last bit): a row's
// result does not depend on the block or thread.
// The block goes in and out by strided loads and gathers (a scalar element-by-element
// transpose took a third of the step). Measured (65536 rows, float32, 2 threads, forward and
// backward): 0.63 ms at C = 10 (0.84 with the scalar transpose); slower than the tiles from C = 16
// on (0.89 against 0.65 ms at C = 16, 7.0 against 4.0 at C = 100).
constexpr int64_t kLaneRows = 64;

template <typename scalar_t, bool kGrad, bool kSpread>
FUSEDLOSS_CPU_CLONES void lanes_range(const Rows<scalar_t>& a, int64_t begin, int64_t end) {
  using acc = acc_t<scalar_t>;
  const int64_t C = a.num_classes;
  const acc* w = a.weight;
  const acc spread = a.smoothing / static_cast<acc>(C);
  const acc keep = acc(1) - a.smoothing;
  acc q_total = 0;  // the same for every row with class-index targets
  if constexpr (kSpread) {
    for (int64_t c = 0; c < C; ++c) q_total += spread * w[c];
  }
  alignas(64) acc e[kLaneClasses * kLaneRows];
  alignas(64) acc row_max[kLaneRows], row_sum[kLaneRows], row_log_sum[kLaneRows];
  alignas(64) acc q_dot_x[kLaneRows], p_scale[kLaneRows], q_scale[kLaneRows];
  acc target_scale[kLaneRows];
  bool counted[kLaneRows];  // false: the target is ignored or out of range (refilled below)
  int32_t class_major_index[kLaneClasses * kLaneRows];
  for (int64_t k = 0; k < C * kLaneRows; ++k) {
    class_major_index[k] = static_cast<int32_t>((k % C) * kLaneRows + k / C);
  }
  for (int64_t first = begin; first < end; first += kLaneRows) {
    const int64_t rows = std::min(kLaneRows, end - first);
    const scalar_t* x = a.logits + first * C;
#pragma omp simd
    for (int64_t i = 0; i < kLaneRows; ++i) {
      row_max[i] = -std::numeric_limits<acc>::infinity();
      row_sum[i] = 0;
      q_dot_x[i] = 0;
    }
    // The block, class-major (the passes below then run over rows); a strided vector load per
    // class.
    for (int64_t c = 0; c < C; ++c) {
      acc* ec = e + c * kLaneRows;
#pragma omp simd
      for (int64_t i = 0; i < rows; ++i) ec[i] = load_as_acc(x[i * C + c]);
      for (int64_t i = rows; i < kLaneRows; ++i) ec[i] = 0;
    }
    for (int64_t c = 0; c < C; ++c) {
      const acc* ec = e + c * kLaneRows;
#pragma omp simd
      for (int64_t i = 0; i < kLaneRows; ++i) {
        row_max[i] = ec[i] > row_max[i] ? ec[i] : row_max[i];  // NaN skipped: the sum has it
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      acc* ec = e + c * kLaneRows;
#pragma omp simd
      for (int64_t i = 0; i < kLaneRows; ++i) {
        const acc v = ec[i];
        if constexpr (kSpread) q_dot_x[i] += spread * w[c] * v;
        ec[i] = formulas::exp_of(v - row_max[i]);
        row_sum[i] += ec[i];
      }
    }
#pragma omp simd
    for (int64_t i = 0; i < kLaneRows; ++i) row_log_sum[i] = formulas::log_of(row_sum[i]);
    for (int64_t i = rows; i < kLaneRows; ++i) p_scale[i] = q_scale[i] = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t r = first + i, t = a.target_index[r];
      counted[i] = t != a.ignore_index && t >= 0 && t < C;
      if (!counted[i]) {
        p_scale[i] = q_scale[i] = 0;
        continue;
      }
      const auto row = formulas::cross_entropy_row_from_log<acc>(
          row_max[i], row_sum[i], row_log_sum[i], q_total, q_dot_x[i], keep * w[t],
          load_as_acc(x[i * C + t]), a.z_loss, a.scale, a.z_scale);
      a.row_loss[r] = row.loss;
      if (a.row_z_loss) a.row_z_loss[r] = row.z_loss;
      p_scale[i] = row.p_scale;
      q_scale[i] = row.q_scale;
      target_scale[i] = row.target_scale;
    }
    if constexpr (kGrad) {
      // The gradient, class-major in place of the exps (vector ops over rows), then the
      // target's own term, then written out row by row (contiguous stores).
      for (int64_t c = 0; c < C; ++c) {
        acc* ec = e + c * kLaneRows;
        const acc q = kSpread ? spread * w[c] : acc(0);
#pragma omp simd
        for (int64_t i = 0; i < kLaneRows; ++i) {
          ec[i] *= p_scale[i];
          if constexpr (kSpread) ec[i] -= q * q_scale[i];
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        if (counted[i]) e[a.target_index[first + i] * kLaneRows + i] -= target_scale[i];
      }
      // Back to rows: the block's gradient is rows * C contiguous values, each gathered from
      // the class-major exps (index k: row k / C, class k % C).
      scalar_t* g = a.grad_input + first * C;
      const int32_t* from = class_major_index;
#pragma omp simd
      for (int64_t k = 0; k < rows * C; ++k) g[k] = store_from_acc<scalar_t>(e[from[k]]);
    }
    for (int64_t i = 0; i < rows; ++i) {
      if (counted[i]) continue;
      const int64_t r = first + i, t = a.target_index[r];
      fill_row(a, r, t == a.ignore_index ? acc(0) : std::numeric_limits<acc>::quiet_NaN());
    }
  }
}

// f(begin, end) over [0, rows) in parallel, each range a whole number of blocks of block_rows
// rows (but the last): a block's rows are the same ones for any number of threads.
template <typename F>
void for_each_block(int64_t rows, int64_t block_rows, int64_t grain_rows, const F& f) {
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  at::parallel_for(0, blocks, std::max<int64_t>(1, grain_rows / block_rows),
                   [&](int64_t first, int64_t last) {
                     f(first * block_rows, std::min(rows, last * block_rows));
                   });
}

template <typename scalar_t, bool kProb, bool kCap>
void rows_range_dispatch(const Rows<scalar_t>& a, int64_t begin, int64_t end, acc_t<scalar_t>* e) {
  const bool spread = kProb || a.smoothing != 0;
  if (a.grad_input) {
    spread ? rows_range<scalar_t, kProb, kCap, true, true>(a, begin, end, e)
           : rows_range<scalar_t, kProb, kCap, true, false>(a, begin, end, e);
  } else {
    spread ? rows_range<scalar_t, kProb, kCap, false, true>(a, begin, end, e)
           : rows_range<scalar_t, kProb, kCap, false, false>(a, begin, end, e);
  }
}

// The rows [0, rows) with the given gradient factors; per-row values into row_loss/row_z_loss.
template <typename scalar_t>
void run_rows(const CrossEntropySpec& spec, const CrossEntropyOperands& o,
              acc_t<scalar_t>* row_loss, acc_t<scalar_t>* row_z_loss, acc_t<scalar_t> scale,
              acc_t<scalar_t> z_scale) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = o.logits.size(0), C = spec.num_classes;
  std::vector<acc> weight(static_cast<size_t>(C), acc(1));
  if (o.weight.defined()) {
    const scalar_t* w = o.weight.const_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c) weight[c] = load_as_acc(w[c]);
  }
  Rows<scalar_t> a{C,
                   o.logits.const_data_ptr<scalar_t>(),
                   spec.probability_targets ? nullptr : o.target.const_data_ptr<int64_t>(),
                   spec.probability_targets ? o.target.const_data_ptr<scalar_t>() : nullptr,
                   weight.data(),
                   row_loss,
                   row_z_loss,
                   o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr,
                   o.grad_target.defined() ? o.grad_target.mutable_data_ptr<scalar_t>() : nullptr,
                   spec.ignore_index,
                   static_cast<acc>(spec.label_smoothing),
                   static_cast<acc>(spec.z_loss),
                   static_cast<acc>(spec.softcap),
                   scale,
                   z_scale};
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(C, 1));
  const bool spread = spec.label_smoothing != 0;
  if (!spec.probability_targets && spec.softcap == 0 && C > 0 && C <= kLaneClasses) {
    for_each_block(rows, kLaneRows, grain, [&](int64_t begin, int64_t end) {
      if (a.grad_input) {
        spread ? lanes_range<scalar_t, true, true>(a, begin, end)
               : lanes_range<scalar_t, true, false>(a, begin, end);
      } else {
        spread ? lanes_range<scalar_t, false, true>(a, begin, end)
               : lanes_range<scalar_t, false, false>(a, begin, end);
      }
    });
    return;
  }
  if (!spec.probability_targets && spec.softcap == 0 && C > 0 && C <= kTileClasses) {
    for_each_block(rows, kTileElements / C, grain, [&](int64_t begin, int64_t end) {
      if (a.grad_input) {
        spread ? tile_range<scalar_t, true, true>(a, begin, end)
               : tile_range<scalar_t, true, false>(a, begin, end);
      } else {
        spread ? tile_range<scalar_t, false, true>(a, begin, end)
               : tile_range<scalar_t, false, false>(a, begin, end);
      }
    });
    return;
  }
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc> scratch(a.grad_input ? static_cast<size_t>(C) : 0);
    const bool cap = spec.softcap > 0;
    if (spec.probability_targets) {
      cap ? rows_range_dispatch<scalar_t, true, true>(a, begin, end, scratch.data())
          : rows_range_dispatch<scalar_t, true, false>(a, begin, end, scratch.data());
    } else {
      cap ? rows_range_dispatch<scalar_t, false, true>(a, begin, end, scratch.data())
          : rows_range_dispatch<scalar_t, false, false>(a, begin, end, scratch.data());
    }
  });
}

// Sums over fixed parts of the rows, taken in parallel and added in part order: the result does
// not depend on the number of threads. part_sums(rows, f) with f(begin, end) -> T (a sum type
// with +=) returns the parts' results in order.
constexpr int64_t kRowsPerSumPart = 1 << 14;

template <typename T, typename F>
std::vector<T> part_sums(int64_t rows, const F& f) {
  const int64_t parts = (rows + kRowsPerSumPart - 1) / kRowsPerSumPart;
  std::vector<T> sums(static_cast<size_t>(parts));
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      sums[static_cast<size_t>(p)] =
          f(p * kRowsPerSumPart, std::min(rows, (p + 1) * kRowsPerSumPart));
    }
  });
  return sums;
}

struct TargetSums {
  double weight = 0;        // W: the summed weights of the counted targets
  int64_t count = 0;        // n: the counted targets
  int64_t first_bad = -1;   // the first row whose target is out of range
};

// The denominators of 'mean' (W and n) and the bad-index check, raised at once.
template <typename scalar_t>
std::pair<double, double> read_targets(const CrossEntropySpec& spec, const CrossEntropyOperands& o) {
  const int64_t rows = o.logits.size(0), C = spec.num_classes;
  if (spec.probability_targets) return {static_cast<double>(rows), static_cast<double>(rows)};
  const int64_t* t = o.target.const_data_ptr<int64_t>();
  const scalar_t* w = o.weight.defined() ? o.weight.const_data_ptr<scalar_t>() : nullptr;
  const auto parts = part_sums<TargetSums>(rows, [&](int64_t begin, int64_t end) {
    TargetSums s;
    for (int64_t r = begin; r < end; ++r) {
      if (t[r] == spec.ignore_index) continue;
      if (t[r] < 0 || t[r] >= C) {
        if (s.first_bad < 0) s.first_bad = r;
        continue;
      }
      if (w) s.weight += static_cast<double>(load_as_acc(w[t[r]]));
      s.count += 1;
    }
    return s;
  });
  double W = 0;
  int64_t n = 0;
  for (const TargetSums& s : parts) {
    if (s.first_bad >= 0 && spec.check_target) {
      BadValueRecord bad = empty_bad_value_record();
      bad.kind = static_cast<int32_t>(BadValueKind::ClassIndex);
      bad.op = reinterpret_cast<unsigned long long>(static_op_name(spec.op));
      bad.position = s.first_bad;
      bad.value = t[s.first_bad];
      bad.limit = C;
      bad.extra = spec.ignore_index;
      raise_bad_value(bad);
    }
    W += s.weight;
    n += s.count;
  }
  return {w ? W : static_cast<double>(n), static_cast<double>(n)};
}

// A whole cross_entropy call (CrossEntropyOperands::loss defined).
template <typename scalar_t>
void run_whole(const CrossEntropySpec& spec, const CrossEntropyOperands& o) {
  using acc = acc_t<scalar_t>;
  const int64_t rows = o.logits.size(0);
  const auto [W, n] = read_targets<scalar_t>(spec, o);
  const bool mean = spec.reduction == at::Reduction::Mean;
  // The two gradient terms' factors, and what backward applies (see CrossEntropySpec).
  acc scale = 1, z_scale = 1, backward = 1;
  if (mean && spec.fold_mean) {
    scale = static_cast<acc>(1.0 / W);
    z_scale = static_cast<acc>(1.0 / n);
  } else if (mean) {
    z_scale = static_cast<acc>(W / n);
    backward = W == 0 ? acc(0) : static_cast<acc>(1.0 / W);  // 0 * inf would be NaN
  }
  std::vector<acc> row_loss(static_cast<size_t>(rows)), row_z(spec.z_loss != 0 ? rows : 0);
  run_rows<scalar_t>(spec, o, row_loss.data(), row_z.empty() ? nullptr : row_z.data(), scale,
                     z_scale);
  scalar_t* loss = o.loss.mutable_data_ptr<scalar_t>();
  scalar_t* z_loss = o.z_loss.mutable_data_ptr<scalar_t>();
  if (spec.reduction == at::Reduction::None) {
    for (int64_t r = 0; r < rows; ++r) {
      const acc z = row_z.empty() ? acc(0) : row_z[r];
      loss[r] = static_cast<scalar_t>(row_loss[r] + z);
      z_loss[r] = static_cast<scalar_t>(z);
    }
    return;
  }
  *o.backward_scale.mutable_data_ptr<acc>() = backward;
  double L = 0, Z = 0;
  for (const double part : part_sums<double>(rows, [&](int64_t begin, int64_t end) {
         double sum = 0;
         for (int64_t r = begin; r < end; ++r) sum += row_loss[r];
         return sum;
       })) {
    L += part;
  }
  for (const acc z : row_z) Z += z;
  if (mean) {
    L /= W;  // 0 / 0 = NaN when every target is ignored, as torch
    Z /= n;
  }
  *loss = static_cast<scalar_t>(L + Z);
  *z_loss = static_cast<scalar_t>(Z);
}

template <typename scalar_t>
void run(const CrossEntropySpec& spec, const CrossEntropyOperands& o) {
  using acc = acc_t<scalar_t>;
  if (o.loss.defined()) return run_whole<scalar_t>(spec, o);
  const acc* scales = o.grad_scales.defined() ? o.grad_scales.const_data_ptr<acc>() : nullptr;
  run_rows<scalar_t>(spec, o, o.row_loss.mutable_data_ptr<acc>(),
                     o.row_z_loss.defined() ? o.row_z_loss.mutable_data_ptr<acc>() : nullptr,
                     scales ? scales[0] : acc(1), scales ? scales[1] : acc(1));
}

}  // namespace

void cross_entropy_kernel(const CrossEntropySpec& spec, const CrossEntropyOperands& operands) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.logits.scalar_type(),
                                  "fusedloss_cross_entropy_cpu",
                                  [&] { run<scalar_t>(spec, operands); });
}

}  // namespace cpu
}  // namespace fusedloss
