// CUDA engine of jensen_shannon_divergence (interface: engines/row_engines.h; per-element math:
// kernels/jensen_shannon.h): a block owns a row of student and teacher logits. Sweeps: the two
// maxima, the two sums of exponentials, the divergence with the sum of its derivatives, then the
// student's gradient, written once (the rows come back from L2). Every sum is reduced in a fixed
// order: no atomics, no synchronization with the host.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/jensen_shannon.h"

namespace fusedloss {
namespace cuda {
namespace {

template <typename scalar_t>
struct JsdRows {
  using acc = acc_t<scalar_t>;
  int64_t classes;
  const scalar_t *student, *teacher;
  const int64_t* labels;  // nullptr: no row ignored
  int64_t ignore_index;
  acc* row_loss;
  scalar_t* grad_input;  // nullptr: no gradient
  acc inv_t, beta, scale;
};

// log Σ e^(v_i / T) of the block's row; every thread gets it.
template <typename scalar_t>
__device__ acc_t<scalar_t> block_log_sum_exp(const scalar_t* v, int64_t C, acc_t<scalar_t> inv_t,
                                             acc_t<scalar_t>* shared) {
  using acc = acc_t<scalar_t>;
  acc top = -std::numeric_limits<acc>::infinity();
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    top = fmax(top, static_cast<acc>(v[i]) * inv_t);
  }
  top = group_all_reduce<kRowThreads>(top, Max<acc>{}, shared);
  if (top == -std::numeric_limits<acc>::infinity()) return top;  // every logit masked
  acc sum = 0;
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    sum += formulas::exp_of(static_cast<acc>(v[i]) * inv_t - top);
  }
  return top + formulas::log_of(group_all_reduce<kRowThreads>(sum, Plus<acc>{}, shared));
}

template <typename scalar_t, JsdKind kind>
__global__ void __launch_bounds__(kRowThreads) jensen_shannon_rows(JsdRows<scalar_t> a) {
  using acc = acc_t<scalar_t>;
  __shared__ acc shared[kRowThreads / 32];
  const int64_t r = blockIdx.x, C = a.classes;
  scalar_t* grad = a.grad_input == nullptr ? nullptr : a.grad_input + r * C;
  if (a.labels != nullptr && a.labels[r] == a.ignore_index) {
    if (threadIdx.x == 0) a.row_loss[r] = acc(0);
    if (grad != nullptr) {
      for (int64_t i = threadIdx.x; i < C; i += kRowThreads) grad[i] = scalar_t(0);
    }
    return;
  }
  const scalar_t* s = a.student + r * C;
  const scalar_t* t = a.teacher + r * C;
  const acc lse_s = block_log_sum_exp(s, C, a.inv_t, shared);
  const acc lse_t = block_log_sum_exp(t, C, a.inv_t, shared);
  acc loss = 0, g_sum = 0;
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    const auto term = jsd_term<kind>(static_cast<acc>(s[i]) * a.inv_t - lse_s,
                                     static_cast<acc>(t[i]) * a.inv_t - lse_t, a.beta);
    loss += term.loss;
    g_sum += term.g;
  }
  loss = group_all_reduce<kRowThreads>(loss, Plus<acc>{}, shared);
  if (threadIdx.x == 0) a.row_loss[r] = loss;
  if (grad == nullptr) return;
  g_sum = group_all_reduce<kRowThreads>(g_sum, Plus<acc>{}, shared);
  for (int64_t i = threadIdx.x; i < C; i += kRowThreads) {
    const acc x = static_cast<acc>(s[i]) * a.inv_t - lse_s;
    const auto term = jsd_term<kind>(x, static_cast<acc>(t[i]) * a.inv_t - lse_t, a.beta);
    grad[i] = static_cast<scalar_t>((term.g - formulas::exp_of(x) * g_sum) * a.scale);
  }
}

template <typename scalar_t, JsdKind kind>
void launch(const JsdRows<scalar_t>& a, int64_t rows) {
  jensen_shannon_rows<scalar_t, kind>
      <<<static_cast<unsigned>(rows), kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void jensen_shannon_kernel(const JsdSpec& spec, const JsdOperands& o) {
  const int64_t rows = o.student.size(0);
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(o.student.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.student.scalar_type(), "fusedloss_jensen_shannon_cuda", [&] {
        using acc = acc_t<scalar_t>;
        JsdRows<scalar_t> a{};
        a.classes = o.student.size(1);
        a.student = o.student.const_data_ptr<scalar_t>();
        a.teacher = o.teacher.const_data_ptr<scalar_t>();
        a.labels = o.labels.defined() ? o.labels.const_data_ptr<int64_t>() : nullptr;
        a.ignore_index = spec.ignore_index;
        a.row_loss = o.row_loss.mutable_data_ptr<acc>();
        a.grad_input = o.grad_input.defined() ? o.grad_input.mutable_data_ptr<scalar_t>() : nullptr;
        a.inv_t = static_cast<acc>(1.0 / spec.temperature);
        a.beta = static_cast<acc>(spec.beta);
        a.scale = static_cast<acc>(o.grad_scale / spec.temperature);
        switch (jsd_kind(spec.beta)) {
          case JsdKind::ForwardKL: return launch<scalar_t, JsdKind::ForwardKL>(a, rows);
          case JsdKind::ReverseKL: return launch<scalar_t, JsdKind::ReverseKL>(a, rows);
          case JsdKind::General: return launch<scalar_t, JsdKind::General>(a, rows);
        }
      });
}

}  // namespace cuda
}  // namespace fusedloss
