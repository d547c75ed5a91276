// CUDA engine of triplet_margin_loss (interface: engines/row_engines.h; per-row math:
// kernels/triplet_margin.h): a warp owns a triplet of rows, reduces its norms (in a fixed order by
// shuffles, no atomics), and writes the row's loss and the three gradients once.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/row_reduce.cuh"
#include "engines/row_engines.h"
#include "kernels/triplet_margin.h"

namespace fusedloss {
namespace cuda {
namespace {

template <typename scalar_t>
struct TripletRows {
  using acc = acc_t<scalar_t>;
  int64_t rows, dim;
  const scalar_t *anchor, *positive, *negative;
  acc* row_loss;
  scalar_t *ga, *gp, *gn;  // each nullptr when that gradient is not asked for
  acc margin, p, eps, scale;
  bool swap;
};

// A norm of the warp's lanes merged in a fixed order; every lane gets it.
template <NormKind kind, typename T>
__device__ __forceinline__ NormSum<T> warp_norm(NormSum<T> s) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    NormSum<T> other{__shfl_xor_sync(0xffffffffu, s.value, offset), T(0)};
    if constexpr (!is_sum_norm<kind>) other.count = __shfl_xor_sync(0xffffffffu, s.count, offset);
    s = norm_merge<kind>(s, other);
  }
  return s;
}

template <typename scalar_t, NormKind kind>
__global__ void __launch_bounds__(kRowThreads) triplet_margin_rows(TripletRows<scalar_t> t) {
  using acc = acc_t<scalar_t>;
  constexpr int kRowsPerBlock = kRowThreads / 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= t.rows) return;  // uniform over the warp
  const scalar_t* a = t.anchor + r * t.dim;
  const scalar_t* q = t.positive + r * t.dim;
  const scalar_t* n = t.negative + r * t.dim;
  auto s_ap = norm_start<kind, acc>(), s_an = norm_start<kind, acc>();
  auto s_pn = norm_start<kind, acc>();
  for (int64_t d = lane; d < t.dim; d += 32) {
    const acc x = static_cast<acc>(a[d]), y = static_cast<acc>(q[d]), z = static_cast<acc>(n[d]);
    norm_add<kind>(s_ap, x - y + t.eps, t.p);
    norm_add<kind>(s_an, x - z + t.eps, t.p);
    if (t.swap) norm_add<kind>(s_pn, y - z + t.eps, t.p);
  }
  s_ap = warp_norm<kind>(s_ap);
  s_an = warp_norm<kind>(s_an);
  if (t.swap) s_pn = warp_norm<kind>(s_pn);
  const acc d_ap = norm_value<kind>(s_ap, t.p), d_an = norm_value<kind>(s_an, t.p);
  const acc d_pn = t.swap ? norm_value<kind>(s_pn, t.p) : acc(0);
  const auto row = triplet_row<acc>(d_ap, d_an, d_pn, t.swap, t.margin, t.scale,
                                    norm_factor<kind>(s_ap, d_ap, t.p),
                                    norm_factor<kind>(s_an, d_an, t.p),
                                    t.swap ? norm_factor<kind>(s_pn, d_pn, t.p) : acc(0));
  if (lane == 0) t.row_loss[r] = row.loss;
  if (t.ga == nullptr && t.gp == nullptr && t.gn == nullptr) return;
  for (int64_t d = lane; d < t.dim; d += 32) {
    const acc x = static_cast<acc>(a[d]), y = static_cast<acc>(q[d]), z = static_cast<acc>(n[d]);
    const acc u_ap = row.w_ap * norm_direction<kind>(x - y + t.eps, d_ap, t.p);
    const acc u_an = row.w_an * norm_direction<kind>(x - z + t.eps, d_an, t.p);
    const acc u_pn = t.swap ? row.w_pn * norm_direction<kind>(y - z + t.eps, d_pn, t.p) : acc(0);
    if (t.ga) t.ga[r * t.dim + d] = static_cast<scalar_t>(u_ap + u_an);
    if (t.gp) t.gp[r * t.dim + d] = static_cast<scalar_t>(u_pn - u_ap);
    if (t.gn) t.gn[r * t.dim + d] = static_cast<scalar_t>(-u_an - u_pn);
  }
}

template <typename scalar_t, NormKind kind>
void launch(const TripletRows<scalar_t>& t) {
  constexpr int kRowsPerBlock = kRowThreads / 32;
  const int blocks = static_cast<int>((t.rows + kRowsPerBlock - 1) / kRowsPerBlock);
  triplet_margin_rows<scalar_t, kind>
      <<<blocks, kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(t);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void triplet_margin_kernel(const TripletMarginSpec& spec, const TripletMarginOperands& o) {
  const int64_t rows = o.anchor.size(0);
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(o.anchor.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.anchor.scalar_type(), "fusedloss_triplet_margin_cuda", [&] {
        using acc = acc_t<scalar_t>;
        TripletRows<scalar_t> t{};
        t.rows = rows;
        t.dim = o.anchor.size(1);
        t.anchor = o.anchor.const_data_ptr<scalar_t>();
        t.positive = o.positive.const_data_ptr<scalar_t>();
        t.negative = o.negative.const_data_ptr<scalar_t>();
        t.row_loss = o.row_loss.mutable_data_ptr<acc>();
        const auto pointer = [](const at::Tensor& g) {
          return g.defined() ? g.mutable_data_ptr<scalar_t>() : nullptr;
        };
        t.ga = pointer(o.grad_anchor);
        t.gp = pointer(o.grad_positive);
        t.gn = pointer(o.grad_negative);
        t.margin = static_cast<acc>(spec.margin);
        t.p = static_cast<acc>(spec.p);
        t.eps = static_cast<acc>(spec.eps);
        t.scale = static_cast<acc>(o.grad_scale);
        t.swap = spec.swap;
        switch (norm_kind(spec.p)) {
          case NormKind::Zero: return launch<scalar_t, NormKind::Zero>(t);
          case NormKind::One: return launch<scalar_t, NormKind::One>(t);
          case NormKind::Two: return launch<scalar_t, NormKind::Two>(t);
          case NormKind::Max: return launch<scalar_t, NormKind::Max>(t);
          case NormKind::Min: return launch<scalar_t, NormKind::Min>(t);
          case NormKind::General: return launch<scalar_t, NormKind::General>(t);
        }
      });
}

}  // namespace cuda
}  // namespace fusedloss
