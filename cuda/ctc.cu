// CUDA engine of ctc_loss (interface: engines/ctc.h; lattice: kernels/ctc.h): a block per sample,
// the threads over the lattice's states, one step in time per __syncthreads. The block checks its
// lengths and labels (a bad one is recorded for a deferred error, no synchronization, and makes
// the sample's loss and gradient NaN, never an access out of bounds), runs alpha forward in time
// into a workspace row per step, and, for the gradient, beta backward in two rows. At each t the
// states' posteriors go to a row; a class's gradient sums its states' posteriors in ascending
// state order (through a list of the states that share a label: no atomics), so the result is
// the same on every run.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/deferred_errors.cuh"
#include "cuda/row_reduce.cuh"
#include "engines/ctc.h"
#include "kernels/ctc.h"
#include "kernels/math.h"

namespace fusedloss {
namespace cuda {
namespace {

using ctc::log_add3;
using ctc::negative_infinity;

constexpr int kThreads = 256;

template <typename scalar_t>
struct CtcArgs {
  using acc = acc_t<scalar_t>;
  const scalar_t* log_probs;
  int64_t time_stride, batch_stride, T, N, C;
  const int64_t* targets;
  int64_t targets_numel, padded_width;  // padded_width: S of padded (N, S) targets
  bool concatenated;
  const int64_t* input_lengths;
  const int64_t* target_lengths;
  int64_t blank;
  bool zero_infinity, mean;
  acc gradient_scale;
  int64_t width;        // states a workspace row holds
  acc* alpha;           // (N, T, width)
  acc* beta;            // (N, 2, width)
  acc* gamma;           // (N, width)
  int32_t* class_head;  // (N, C): the first label state of each class, -1 for none
  int32_t* next_same;   // (N, width): the next label state with the same class, -1 for none
  acc* nll;
  acc* loss_terms;
  scalar_t* grad;  // nullptr: no gradient
  ErrorSink sink;
};

template <typename scalar_t>
__device__ void report(const CtcArgs<scalar_t>& a, BadValueKind kind, int64_t position,
                       int64_t value, int64_t limit, int64_t extra) {
  ErrorSink s = a.sink;
  s.kind = static_cast<int32_t>(kind);
  s.limit = limit;
  s.extra = extra;
  report_bad_value(s, position, value);
}

// Every gradient row of sample n from time `first` on.
template <typename scalar_t>
__device__ void fill_rows(const CtcArgs<scalar_t>& a, int64_t n, int64_t first, scalar_t value) {
  for (int64_t t = first; t < a.T; ++t) {
    scalar_t* row = a.grad + (t * a.N + n) * a.C;
    for (int64_t c = threadIdx.x; c < a.C; c += kThreads) row[c] = value;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) ctc_samples(CtcArgs<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  __shared__ int64_t shared_index[kThreads / 32];
  __shared__ acc shared_acc[kThreads / 32];
  __shared__ acc shared_nll;  // before zero_infinity
  const int64_t n = blockIdx.x;
  const int64_t input_length = a.input_lengths[n], target_length = a.target_lengths[n];

  // Where the sample's labels start, then its checks (each bad value recorded once).
  int64_t offset = n * a.padded_width, bad = 0;
  if (a.concatenated) {
    // The labels follow the earlier samples'; a negative earlier length (reported by its own
    // block) leaves this sample's place unknown: NaN, nothing read.
    int64_t before = 0, negative_before = 0;
    for (int64_t m = threadIdx.x; m < n; m += kThreads) {
      const int64_t length = a.target_lengths[m];
      before += length > 0 ? length : 0;
      negative_before |= length < 0 ? 1 : 0;
    }
    offset = group_all_reduce<kThreads>(before, Plus<int64_t>{}, shared_index);
    bad = group_all_reduce<kThreads>(negative_before, Max<int64_t>{}, shared_index);
  }
  if (input_length < 0 || input_length > a.T) {
    bad = 1;
    if (threadIdx.x == 0) report(a, BadValueKind::CtcInputLength, n, input_length, a.T, 0);
  }
  const int64_t end = offset + target_length;
  const bool last = n == a.N - 1;
  if (target_length < 0) {
    bad = 1;
    if (threadIdx.x == 0) report(a, BadValueKind::CtcTargetLength, n, target_length, 0, 0);
  } else if (!a.concatenated && target_length > a.padded_width) {
    bad = 1;
    if (threadIdx.x == 0) {
      report(a, BadValueKind::CtcTargetLength, n, target_length, a.padded_width, 1);
    }
  } else if (a.concatenated && (end > a.targets_numel || (last && end != a.targets_numel))) {
    bad = 1;
    if (threadIdx.x == 0) report(a, BadValueKind::CtcTargetLength, n, end, a.targets_numel, 2);
  }
  if (!bad) {
    for (int64_t k = offset + threadIdx.x; k < end; k += kThreads) {
      const int64_t v = a.targets[k];
      if (v < 0 || v >= a.C) {
        bad = 1;
        report(a, BadValueKind::CtcLabel, k, v, a.C, n);
      } else if (v == a.blank) {
        bad = 1;
        report(a, BadValueKind::CtcBlankLabel, k, v, a.C, n);
      }
    }
  }
  bad = group_all_reduce<kThreads>(bad, Max<int64_t>{}, shared_index);
  if (bad) {
    const acc nan = std::numeric_limits<acc>::quiet_NaN();
    if (threadIdx.x == 0) a.nll[n] = a.loss_terms[n] = nan;
    if (a.grad != nullptr) fill_rows(a, n, 0, static_cast<scalar_t>(nan));
    return;
  }

  const int64_t* labels = a.targets + offset;
  const int64_t S = 2 * target_length + 1;
  const scalar_t* lp = a.log_probs + n * a.batch_stride;
  acc* alpha = a.alpha + n * a.T * a.width;
  auto lp_state = [&](int64_t t, int64_t s) {
    return static_cast<acc>(lp[t * a.time_stride + ctc::state_class(labels, s, a.blank)]);
  };

  // Forward: alpha (a target longer than the input has no alignment: no lattice).
  const bool feasible = input_length > 0 && target_length <= input_length;
  if (feasible) {
    for (int64_t s = threadIdx.x; s < S; s += kThreads) {
      alpha[s] = s < 2 ? lp_state(0, s) : negative_infinity<acc>();
    }
    for (int64_t t = 1; t < input_length; ++t) {
      __syncthreads();
      const acc* prev = alpha + (t - 1) * a.width;
      acc* cur = alpha + t * a.width;
      for (int64_t s = threadIdx.x; s < S; s += kThreads) {
        const acc from_skip = ctc::may_skip_into(labels, s) ? prev[s - 2] : negative_infinity<acc>();
        cur[s] = log_add3(prev[s], s > 0 ? prev[s - 1] : negative_infinity<acc>(), from_skip) +
                 lp_state(t, s);
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    acc nll = feasible ? ctc::nll_from_last_alphas(alpha + (input_length - 1) * a.width,
                                                   target_length)
                       : (input_length == 0 ? ctc::nll_without_time_steps<acc>(target_length)
                                            : std::numeric_limits<acc>::infinity());
    shared_nll = nll;
    if (a.zero_infinity && nll == std::numeric_limits<acc>::infinity()) nll = acc(0);
    const acc per_target = acc(1) / static_cast<acc>(target_length > 1 ? target_length : 1);
    a.nll[n] = nll;
    a.loss_terms[n] = a.mean ? nll * per_target / static_cast<acc>(a.N) : nll;
  }
  __syncthreads();
  if (a.grad == nullptr) return;
  const acc nll = shared_nll;
  fill_rows(a, n, input_length, scalar_t(0));
  const bool infinite = !feasible || nll == std::numeric_limits<acc>::infinity();
  if ((infinite || nll != nll) && input_length > 0) {
    // No alignment: 0 with zero_infinity, else NaN as torch; a NaN loss: NaN (as the CPU).
    const acc value = infinite && a.zero_infinity ? acc(0) : std::numeric_limits<acc>::quiet_NaN();
    for (int64_t t = 0; t < input_length; ++t) {
      scalar_t* row = a.grad + (t * a.N + n) * a.C;
      for (int64_t c = threadIdx.x; c < a.C; c += kThreads) row[c] = static_cast<scalar_t>(value);
    }
    return;
  }
  if (input_length == 0) return;

  // The states that share a class, in ascending order: a class's head and each state's next.
  int32_t* head = a.class_head + n * a.C;
  int32_t* next_same = a.next_same + n * a.width;
  for (int64_t c = threadIdx.x; c < a.C; c += kThreads) head[c] = -1;
  __syncthreads();
  for (int64_t k = threadIdx.x; k < target_length; k += kThreads) {
    int32_t following = -1;
    for (int64_t j = k + 1; j < target_length && following < 0; ++j) {
      if (labels[j] == labels[k]) following = static_cast<int32_t>(2 * j + 1);
    }
    next_same[2 * k + 1] = following;
    bool first = true;
    for (int64_t j = 0; j < k && first; ++j) first = labels[j] != labels[k];
    if (first) head[labels[k]] = static_cast<int32_t>(2 * k + 1);
  }

  const acc per_target = acc(1) / static_cast<acc>(target_length > 1 ? target_length : 1);
  const acc scale = (a.mean ? per_target : acc(1)) * a.gradient_scale;
  acc* beta_cur = a.beta + n * 2 * a.width;
  acc* beta_next = beta_cur + a.width;
  acc* gamma = a.gamma + n * a.width;
  for (int64_t t = input_length - 1; t >= 0; --t) {
    __syncthreads();  // the previous step's readers of beta_next and gamma are done
    for (int64_t s = threadIdx.x; s < S; s += kThreads) {
      acc b;
      if (t == input_length - 1) {
        b = s >= S - 2 ? lp_state(t, s) : negative_infinity<acc>();
      } else {
        const acc from_skip = s + 2 < S && ctc::may_skip_into(labels, s + 2)
                                  ? beta_next[s + 2]
                                  : negative_infinity<acc>();
        b = log_add3(beta_next[s], s + 1 < S ? beta_next[s + 1] : negative_infinity<acc>(),
                     from_skip) +
            lp_state(t, s);
      }
      beta_cur[s] = b;
      gamma[s] = ctc::posterior_of(alpha[t * a.width + s] + b + nll - lp_state(t, s));
    }
    __syncthreads();
    acc blank_part = 0;  // the blank states' posteriors, in a fixed order
    for (int64_t s = 2 * threadIdx.x; s < S; s += 2 * kThreads) blank_part += gamma[s];
    const acc blank_posterior = group_all_reduce<kThreads>(blank_part, Plus<acc>{}, shared_acc);
    scalar_t* row = a.grad + (t * a.N + n) * a.C;
    const scalar_t* lp_row = lp + t * a.time_stride;
    for (int64_t c = threadIdx.x; c < a.C; c += kThreads) {
      acc posterior = 0;
      if (c == a.blank) {
        posterior = blank_posterior;
      } else {
        for (int32_t s = head[c]; s >= 0; s = next_same[s]) posterior += gamma[s];
      }
      row[c] = static_cast<scalar_t>(
          (formulas::exp_of(static_cast<acc>(lp_row[c])) - posterior) * scale);
    }
    acc* swap = beta_cur;
    beta_cur = beta_next;
    beta_next = swap;
  }
}

template <typename scalar_t>
void run(const CtcOperands& o) {
  using acc = acc_t<scalar_t>;
  const int64_t T = o.log_probs.size(0), N = o.log_probs.size(1), C = o.log_probs.size(2);
  const int64_t W = o.lattice_width;
  const auto acc_options = o.nll.options();
  const bool grad = o.grad.defined();
  // One allocation for the workspace: alphas, and for the gradient the beta rows and posteriors.
  const int64_t acc_cells = N * T * W + (grad ? N * 3 * W : 0);
  const at::Tensor work = at::empty({acc_cells}, acc_options);
  const at::Tensor lists = grad ? at::empty({N * (C + W)}, acc_options.dtype(at::kInt)) : at::Tensor();
  acc* base = work.mutable_data_ptr<acc>();
  int32_t* list_base = grad ? lists.mutable_data_ptr<int32_t>() : nullptr;
  CtcArgs<scalar_t> a{
      o.log_probs.const_data_ptr<scalar_t>(),
      o.log_probs.stride(0),
      o.log_probs.stride(1),
      T,
      N,
      C,
      o.targets.const_data_ptr<int64_t>(),
      o.targets.numel(),
      o.concatenated ? 0 : o.targets.size(1),
      o.concatenated,
      o.input_lengths.const_data_ptr<int64_t>(),
      o.target_lengths.const_data_ptr<int64_t>(),
      o.blank,
      o.zero_infinity,
      o.mean,
      static_cast<acc>(o.gradient_scale),
      W,
      base,
      grad ? base + N * T * W : nullptr,
      grad ? base + N * T * W + N * 2 * W : nullptr,
      list_base,
      grad ? list_base + N * C : nullptr,
      o.nll.mutable_data_ptr<acc>(),
      o.loss_terms.mutable_data_ptr<acc>(),
      grad ? o.grad.mutable_data_ptr<scalar_t>() : nullptr,
      error_sink("ctc_loss", BadValueKind::CtcLabel, C)};
  ctc_samples<scalar_t>
      <<<static_cast<unsigned>(N), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  after_launch(a.sink);
}

}  // namespace

void ctc_kernel(const CtcOperands& operands) {
  if (operands.log_probs.size(1) == 0) return;
  TORCH_CHECK(operands.log_probs.size(1) <= std::numeric_limits<int32_t>::max(),
              "fusedloss.ctc_loss: at most 2^31 - 1 samples fit a CUDA grid, got ",
              operands.log_probs.size(1));
  const c10::cuda::CUDAGuard guard(operands.log_probs.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, operands.log_probs.scalar_type(),
                                  "fusedloss_ctc_cuda", [&] { run<scalar_t>(operands); });
}

}  // namespace cuda
}  // namespace fusedloss
