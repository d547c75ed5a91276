// CPU kernels of the vocab-parallel cross entropy's local work (see engines/vocab_shard.h). Rows
// are split over threads; each row is read from memory once per pass (a second sweep of the row
// comes from cache), exp through libmvec, sums per row in class order: the same result for any
// thread count.

#include "engines/vocab_shard.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <limits>
#include <vector>

#include "cpu/element_convert.h"
#include "cpu/gradient_allocator.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "cpu/vector_math.h"       // SIMD (libmvec) declarations of exp/tanh
#include "kernels/vocab_shard.h"

namespace fusedloss {
namespace cpu {
namespace {

using formulas::exp_of;
using formulas::softcapped;
using formulas::vocab_shard_gradient;

// kCap false passes cap 0 to the formulas: the softcap then compiles away.
template <typename scalar_t, bool kCap, bool kSmooth>
FUSEDLOSS_CPU_CLONES void stats_rows(const scalar_t* logits, const int64_t* target,
                                     const acc_t<scalar_t>* q, int64_t C, acc_t<scalar_t> cap_in,
                                     acc_t<scalar_t>* out, int64_t begin, int64_t end,
                                     acc_t<scalar_t>* x) {
  using acc = acc_t<scalar_t>;
  const acc cap = kCap ? cap_in : acc(0);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* row_logits = logits + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) x[c] = softcapped(load_as_acc(row_logits[c]), cap);
    acc max = -std::numeric_limits<acc>::infinity();
#pragma omp simd reduction(max : max)
    for (int64_t c = 0; c < C; ++c) max = x[c] > max ? x[c] : max;  // NaN: the sum has it
    const acc shift = formulas::vocab_shard_shift(max);
    acc sum = 0, q_dot_x = 0;
#pragma omp simd reduction(+ : sum, q_dot_x)
    for (int64_t c = 0; c < C; ++c) {
      sum += exp_of(x[c] - shift);
      if constexpr (kSmooth) q_dot_x += q[c] * x[c];
    }
    const int64_t t = target[r];
    acc* row = out + r * 4;
    row[0] = max;
    row[1] = sum;
    row[2] = t >= 0 && t < C ? x[t] : acc(0);
    row[3] = q_dot_x;
  }
}

template <typename scalar_t, bool kCap, bool kSmooth>
FUSEDLOSS_CPU_CLONES void gradient_rows(const scalar_t* logits, const int64_t* target,
                                        const acc_t<scalar_t>* q, int64_t C, acc_t<scalar_t> cap_in,
                                        const acc_t<scalar_t>* lse, const acc_t<scalar_t>* p_scale,
                                        const acc_t<scalar_t>* q_scale,
                                        const acc_t<scalar_t>* t_scale, scalar_t* grad,
                                        int64_t begin, int64_t end) {
  using acc = acc_t<scalar_t>;
  const acc cap = kCap ? cap_in : acc(0);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* x = logits + r * C;
    scalar_t* g = grad + r * C;
    const acc m = lse[r], P = p_scale[r], Q = kSmooth ? q_scale[r] : acc(0);
    const int64_t t = target[r];
    // Every logit without the target term (a branch-free loop), then the target's own entry,
    // read before the loop in case grad and logits are one buffer.
    const bool here = t >= 0 && t < C;
    const acc x_t = here ? load_as_acc(x[t]) : acc(0);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const acc q_term = kSmooth ? q[c] * Q : acc(0);
      g[c] = store_from_acc<scalar_t>(
          vocab_shard_gradient(load_as_acc(x[c]), cap, m, P, acc(0), q_term));
    }
    if (here) {
      const acc q_term = kSmooth ? q[t] * Q : acc(0);
      g[t] = store_from_acc<scalar_t>(vocab_shard_gradient(x_t, cap, m, P, t_scale[r], q_term));
    }
  }
}

int64_t grain_rows(int64_t C) { return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(C, 1)); }

}  // namespace

at::Tensor vocab_shard_stats_kernel(const VocabShardOperands& o) {
  const int64_t N = o.logits.size(0), C = o.logits.size(1);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_vocab_shard_stats_cpu", [&] {
        using acc = acc_t<scalar_t>;
        out = at::empty({N, 4}, o.logits.options().dtype(c10::CppTypeToScalarType<acc>::value));
        const scalar_t* x = o.logits.const_data_ptr<scalar_t>();
        const int64_t* t = o.target.const_data_ptr<int64_t>();
        const acc* q = o.smoothing.defined() ? o.smoothing.const_data_ptr<acc>() : nullptr;
        acc* s = out.mutable_data_ptr<acc>();
        const acc cap = static_cast<acc>(o.softcap);
        formulas::with_shard_flags(o.softcap > 0, q != nullptr, [&](auto kCap, auto kSmooth) {
          at::parallel_for(0, N, grain_rows(C), [&](int64_t begin, int64_t end) {
            std::vector<acc> scratch(static_cast<size_t>(C));
            stats_rows<scalar_t, decltype(kCap)::value, decltype(kSmooth)::value>(
                x, t, q, C, cap, s, begin, end, scratch.data());
          });
        });
      });
  return out;
}

at::Tensor vocab_shard_gradient_kernel(const VocabShardOperands& o, const at::Tensor& lse,
                                       const at::Tensor& p_scale, const at::Tensor& q_scale,
                                       const at::Tensor& target_scale) {
  const int64_t N = o.logits.size(0), C = o.logits.size(1);
  at::Tensor grad = empty_gradient({N, C}, o.logits.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.logits.scalar_type(), "fusedloss_vocab_shard_gradient_cpu", [&] {
        using acc = acc_t<scalar_t>;
        const scalar_t* x = o.logits.const_data_ptr<scalar_t>();
        const int64_t* t = o.target.const_data_ptr<int64_t>();
        const acc* q = o.smoothing.defined() ? o.smoothing.const_data_ptr<acc>() : nullptr;
        scalar_t* g = grad.mutable_data_ptr<scalar_t>();
        const acc cap = static_cast<acc>(o.softcap);
        formulas::with_shard_flags(o.softcap > 0, q != nullptr, [&](auto kCap, auto kSmooth) {
          at::parallel_for(0, N, grain_rows(C), [&](int64_t begin, int64_t end) {
            gradient_rows<scalar_t, decltype(kCap)::value, decltype(kSmooth)::value>(
                x, t, q, C, cap, lse.const_data_ptr<acc>(), p_scale.const_data_ptr<acc>(),
                q_scale.const_data_ptr<acc>(), target_scale.const_data_ptr<acc>(), g, begin, end);
          });
        });
      });
  return grad;
}

}  // namespace cpu
}  // namespace fusedloss
