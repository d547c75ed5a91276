#pragma once
// CPU pointwise engine: one pass over input and target (and weight, pos_weight) computes the loss
// (per element, or its sum) and, when asked, the gradients. Work is split into fixed chunks whose
// partial sums are added in chunk order, so the result is bitwise the same for any thread count.
// Each family's translation unit instantiates it for its formulas.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <emmintrin.h>  // SSE2 streaming stores
#endif

#include "cpu/element_convert.h"
#include "engines/pointwise_engine.h"

// The hot loop is compiled twice, for baseline x86-64 (SSE2) and for AVX2, and the loader picks
// by the CPU's features at run time (function multi-versioning). A feature, not "arch=haswell":
// an arch clone is chosen only on that CPU model, so AMD processors would never get it.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FUSEDLOSS_CPU_CLONES __attribute__((target_clones("default", "avx2")))
#else
#define FUSEDLOSS_CPU_CLONES
#endif

namespace fusedloss {
namespace cpu {
namespace engine {

constexpr int64_t kChunk = 1 << 15;  // elements per parallel task
constexpr int64_t kBlock = 512;      // elements summed in the accumulation type before widening

using ::fusedloss::acc_t;

// weight or pos_weight, repeating with a period along the flat index. at(i, len) gives the
// values from element i on, shortening len so the run never wraps around the period. Short
// periods (and an absent tensor: ones) are tiled out so any run of kBlock reads contiguously.
template <typename scalar_t>
class PeriodicStream {
 public:
  explicit PeriodicStream(const at::Tensor& values) {
    if (!values.defined() || values.numel() == 0) {  // absent (or no elements to weigh): ones
      tile_.assign(kBlock + 1, scalar_t(1));
      period_ = 1;
    } else if (values.numel() >= kBlock) {
      data_ = values.const_data_ptr<scalar_t>();
      period_ = values.numel();
      return;
    } else {
      const scalar_t* v = values.const_data_ptr<scalar_t>();
      period_ = values.numel();
      tile_.resize(static_cast<size_t>(period_ + kBlock));
      for (size_t i = 0; i < tile_.size(); ++i) tile_[i] = v[i % period_];
    }
    data_ = tile_.data();
    tiled_ = true;
  }
  const scalar_t* at(int64_t i, int64_t& len) const {
    const int64_t offset = i % period_;
    if (!tiled_) len = std::min(len, period_ - offset);
    return data_ + offset;
  }

 private:
  std::vector<scalar_t> tile_;
  const scalar_t* data_ = nullptr;
  int64_t period_ = 1;
  bool tiled_ = false;
};

template <typename scalar_t>
struct Pointers {
  const scalar_t* x;
  const scalar_t* t;
  scalar_t* loss;         // per element (reduction 'none'), else unused
  scalar_t* grad_input;   // when kGradInput
  scalar_t* grad_target;  // when kGradTarget
};

// An input gradient of 32 MiB or more (the size of this development machine's last-level cache)
// is written with non-temporal stores: a normal store first reads each line into the cache (a
// third more traffic for a loss that reads two values and writes one), only to evict it unread.
// The block is computed into a buffer in L1 and streamed out from there. Below the threshold the
// gradient stays in cache for whoever reads it next, and the block is written in place. Only the
// input's gradient is streamed; a target gradient (rarely asked for) is written in place.
constexpr int64_t kStreamBytes = int64_t{32} << 20;

inline void stream_out(void* destination, const void* source, int64_t bytes) {
  auto* d = static_cast<char*>(destination);
  const auto* s = static_cast<const char*>(source);
#if defined(__x86_64__)
  const int64_t head = std::min<int64_t>(bytes, (16 - reinterpret_cast<uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, static_cast<size_t>(head));
  int64_t i = head;
  for (; i + 16 <= bytes; i += 16) {  // SSE2: in every x86-64 clone
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  }
  std::memcpy(d + i, s + i, static_cast<size_t>(bytes - i));
#else
  std::memcpy(d, s, static_cast<size_t>(bytes));
#endif
}

inline void finish_streaming() {
#if defined(__x86_64__)
  _mm_sfence();  // streamed stores are weakly ordered: make them visible before the task ends
#endif
}

struct BlockResult {
  double sum = 0;
  int64_t invalid = 0;
};

// One block of len elements starting at element `begin` of every array.
// grad_input_out: where the block's input gradient goes (p.grad_input + begin, or a buffer).
template <typename scalar_t, typename Formula, bool kReduce, bool kGradInput, bool kGradTarget>
FUSEDLOSS_CPU_CLONES BlockResult run_block(Pointers<scalar_t> p, const scalar_t* w,
                                           const scalar_t* pw, int64_t begin, int64_t len,
                                           Formula formula, acc_t<scalar_t> grad_scale,
                                           scalar_t* grad_input_out) {
  using acc = acc_t<scalar_t>;
  acc sum = 0;
  int invalid = 0;  // 32-bit like the float lanes, so the count vectorizes with them
  const scalar_t* x = p.x + begin;
  const scalar_t* t = p.t + begin;
#pragma omp simd reduction(+ : sum, invalid)
  for (int64_t i = 0; i < len; ++i) {
    const acc xv = load_as_acc(x[i]), tv = load_as_acc(t[i]);
    const acc wv = load_as_acc(w[i]), pv = load_as_acc(pw[i]);
    if constexpr (validates_elements<Formula, acc>) invalid += formula.valid(xv, tv) ? 0 : 1;
    const acc value = formula.value(xv, tv, wv, pv);
    if constexpr (kReduce) {
      sum += value;
    } else {
      p.loss[begin + i] = store_from_acc<scalar_t>(value);
    }
    if constexpr (kGradInput) {
      grad_input_out[i] =
          store_from_acc<scalar_t>(formula.grad_input(xv, tv, wv, pv) * grad_scale);
    }
    if constexpr (kGradTarget) {
      p.grad_target[begin + i] =
          store_from_acc<scalar_t>(formula.grad_target(xv, tv, wv, pv) * grad_scale);
    }
  }
  return {static_cast<double>(sum), invalid};
}

// All n elements; returns the sum of the losses (0 when not reduced) and the invalid count.
template <typename scalar_t, typename Formula, bool kReduce, bool kGradInput, bool kGradTarget>
BlockResult run(Pointers<scalar_t> p, const PeriodicStream<scalar_t>& weight,
                const PeriodicStream<scalar_t>& pos_weight, int64_t n, Formula formula,
                acc_t<scalar_t> grad_scale) {
  const int64_t num_chunks = (n + kChunk - 1) / kChunk;
  std::vector<BlockResult> chunks(static_cast<size_t>(num_chunks));
  const bool stream = kGradInput && n * static_cast<int64_t>(sizeof(scalar_t)) >= kStreamBytes;
  at::parallel_for(0, num_chunks, 1, [&](int64_t first, int64_t last) {
    alignas(64) scalar_t buffer[kBlock];
    for (int64_t c = first; c < last; ++c) {
      const int64_t end = std::min(n, (c + 1) * kChunk);
      BlockResult chunk;
      for (int64_t b = c * kChunk; b < end;) {
        int64_t len = std::min(kBlock, end - b);
        const scalar_t* w = weight.at(b, len);
        const scalar_t* pw = pos_weight.at(b, len);
        scalar_t* grad_out = !kGradInput ? nullptr : stream ? buffer : p.grad_input + b;
        const BlockResult block = run_block<scalar_t, Formula, kReduce, kGradInput, kGradTarget>(
            p, w, pw, b, len, formula, grad_scale, grad_out);
        if (stream) stream_out(p.grad_input + b, buffer, len * static_cast<int64_t>(sizeof(scalar_t)));
        chunk.sum += block.sum;
        chunk.invalid += block.invalid;
        b += len;
      }
      chunks[static_cast<size_t>(c)] = chunk;
    }
    if (stream) finish_streaming();
  });
  BlockResult total;
  for (const BlockResult& c : chunks) {
    total.sum += c.sum;
    total.invalid += c.invalid;
  }
  return total;
}

template <typename scalar_t, typename Formula, bool kReduce>
BlockResult run_with_gradients(Pointers<scalar_t> p, const PeriodicStream<scalar_t>& weight,
                               const PeriodicStream<scalar_t>& pos_weight, int64_t n,
                               Formula formula, acc_t<scalar_t> grad_scale) {
  if (p.grad_target) {
    if constexpr (has_target_gradient<Formula, acc_t<scalar_t>>) {
      return run<scalar_t, Formula, kReduce, true, true>(p, weight, pos_weight, n, formula,
                                                         grad_scale);
    }
    TORCH_INTERNAL_ASSERT(false, "fusedloss: this loss has no target gradient formula");
  }
  if (p.grad_input) {
    return run<scalar_t, Formula, kReduce, true, false>(p, weight, pos_weight, n, formula,
                                                        grad_scale);
  }
  return run<scalar_t, Formula, kReduce, false, false>(p, weight, pos_weight, n, formula,
                                                       grad_scale);
}

template <typename scalar_t, typename Formula>
void launch(const PointwiseLossSpec& spec, const PointwiseOperands& o, Formula formula) {
  const int64_t n = o.input.numel();
  const bool reduce = spec.reduction != at::Reduction::None;
  Pointers<scalar_t> p{
      o.input.const_data_ptr<scalar_t>(), o.target.const_data_ptr<scalar_t>(),
      reduce ? nullptr : o.loss.mutable_data_ptr<scalar_t>(),
      o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr,
      o.grad_target.defined() ? o.grad_target.mutable_data_ptr<scalar_t>() : nullptr};
  const PeriodicStream<scalar_t> weight(o.weight), pos_weight(o.pos_weight);
  const auto grad_scale = static_cast<acc_t<scalar_t>>(spec.grad_scale);
  const BlockResult result = reduce ? run_with_gradients<scalar_t, Formula, true>(
                                          p, weight, pos_weight, n, formula, grad_scale)
                                    : run_with_gradients<scalar_t, Formula, false>(
                                          p, weight, pos_weight, n, formula, grad_scale);
  if (reduce) {
    double total = result.sum;
    if (spec.reduction == at::Reduction::Mean) total /= spec.mean_divisor;  // 0/0: NaN
    *o.loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total);
    *o.backward_scale.mutable_data_ptr<acc_t<scalar_t>>() =
        static_cast<acc_t<scalar_t>>(spec.backward_scale);
  }
  if (o.invalid_count.defined()) *o.invalid_count.mutable_data_ptr<int64_t>() = result.invalid;
}

// The whole engine call for one family: dtype dispatch, then the family's formula.
template <typename Visit>
void run_family(const PointwiseLossSpec& spec, const PointwiseOperands& operands, Visit visit) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, operands.input.scalar_type(), "fusedloss_pointwise_cpu", [&] {
        visit.template operator()<acc_t<scalar_t>>(
            spec, [&](auto formula) { launch<scalar_t>(spec, operands, formula); });
      });
}

}  // namespace engine
}  // namespace cpu
}  // namespace fusedloss
