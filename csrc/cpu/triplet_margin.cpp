// CPU engine of triplet_margin_loss (interface: engines/row_engines.h; per-row math:
// kernels/triplet_margin.h): a triplet of rows is read once for its norms and, when a gradient
// is asked for, once more from cache to write the three gradients.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/element_convert.h"
#include "cpu/pointwise_engine.h"  // FUSEDLOSS_CPU_CLONES
#include "cpu/vector_math.h"       // SIMD (libmvec) declarations of exp/log/pow
#include "engines/row_engines.h"
#include "kernels/triplet_margin.h"

namespace fusedloss {
namespace cpu {
namespace {

template <typename scalar_t, NormKind kind, bool kSwap, bool kGrad>
FUSEDLOSS_CPU_CLONES void rows_range(const TripletMarginSpec& spec,
                                     const TripletMarginOperands& o, int64_t begin, int64_t end) {
  using acc = acc_t<scalar_t>;
  const int64_t D = o.anchor.size(1);
  const scalar_t* anchor = o.anchor.const_data_ptr<scalar_t>();
  const scalar_t* positive = o.positive.const_data_ptr<scalar_t>();
  const scalar_t* negative = o.negative.const_data_ptr<scalar_t>();
  acc* row_loss = o.row_loss.mutable_data_ptr<acc>();
  const auto pointer = [](const at::Tensor& g) {
    return g.defined() ? g.mutable_data_ptr<scalar_t>() : nullptr;
  };
  scalar_t* ga = pointer(o.grad_anchor);
  scalar_t* gp = pointer(o.grad_positive);
  scalar_t* gn = pointer(o.grad_negative);
  const acc margin = static_cast<acc>(spec.margin), p = static_cast<acc>(spec.p);
  const acc eps = static_cast<acc>(spec.eps), scale = static_cast<acc>(o.grad_scale);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* a = anchor + r * D;
    const scalar_t* q = positive + r * D;
    const scalar_t* n = negative + r * D;
    auto s_ap = norm_start<kind, acc>(), s_an = norm_start<kind, acc>();
    auto s_pn = norm_start<kind, acc>();
    if constexpr (is_sum_norm<kind>) {
      acc v_ap = 0, v_an = 0, v_pn = 0;  // plain sums, so the loop vectorizes
#pragma omp simd reduction(+ : v_ap, v_an, v_pn)
      for (int64_t d = 0; d < D; ++d) {
        const acc x = load_as_acc(a[d]), y = load_as_acc(q[d]), z = load_as_acc(n[d]);
        v_ap += norm_term<kind>(x - y + eps, p);
        v_an += norm_term<kind>(x - z + eps, p);
        if constexpr (kSwap) v_pn += norm_term<kind>(y - z + eps, p);
      }
      s_ap.value = v_ap;
      s_an.value = v_an;
      s_pn.value = v_pn;
    } else {
      for (int64_t d = 0; d < D; ++d) {
        const acc x = load_as_acc(a[d]), y = load_as_acc(q[d]), z = load_as_acc(n[d]);
        norm_add<kind>(s_ap, x - y + eps, p);
        norm_add<kind>(s_an, x - z + eps, p);
        if constexpr (kSwap) norm_add<kind>(s_pn, y - z + eps, p);
      }
    }
    const acc d_ap = norm_value<kind>(s_ap, p), d_an = norm_value<kind>(s_an, p);
    const acc d_pn = kSwap ? norm_value<kind>(s_pn, p) : acc(0);
    const auto row = triplet_row<acc>(
        d_ap, d_an, d_pn, kSwap, margin, scale, norm_factor<kind>(s_ap, d_ap, p),
        norm_factor<kind>(s_an, d_an, p), kSwap ? norm_factor<kind>(s_pn, d_pn, p) : acc(0));
    row_loss[r] = row.loss;
    if constexpr (kGrad) {
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const acc x = load_as_acc(a[d]), y = load_as_acc(q[d]), z = load_as_acc(n[d]);
        const acc u_ap = row.w_ap * norm_direction<kind>(x - y + eps, d_ap, p);
        const acc u_an = row.w_an * norm_direction<kind>(x - z + eps, d_an, p);
        const acc u_pn = kSwap ? row.w_pn * norm_direction<kind>(y - z + eps, d_pn, p) : acc(0);
        if (ga) ga[r * D + d] = store_from_acc<scalar_t>(u_ap + u_an);
        if (gp) gp[r * D + d] = store_from_acc<scalar_t>(u_pn - u_ap);
        if (gn) gn[r * D + d] = store_from_acc<scalar_t>(-u_an - u_pn);
      }
    }
  }
}

template <typename scalar_t, NormKind kind>
void run(const TripletMarginSpec& spec, const TripletMarginOperands& o) {
  const int64_t rows = o.anchor.size(0), D = o.anchor.size(1);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(D, 1));
  const bool grad =
      o.grad_anchor.defined() || o.grad_positive.defined() || o.grad_negative.defined();
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    if (spec.swap) {
      grad ? rows_range<scalar_t, kind, true, true>(spec, o, begin, end)
           : rows_range<scalar_t, kind, true, false>(spec, o, begin, end);
    } else {
      grad ? rows_range<scalar_t, kind, false, true>(spec, o, begin, end)
           : rows_range<scalar_t, kind, false, false>(spec, o, begin, end);
    }
  });
}

}  // namespace

void triplet_margin_kernel(const TripletMarginSpec& spec, const TripletMarginOperands& o) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, o.anchor.scalar_type(), "fusedloss_triplet_margin_cpu", [&] {
        switch (norm_kind(spec.p)) {
          case NormKind::Zero: return run<scalar_t, NormKind::Zero>(spec, o);
          case NormKind::One: return run<scalar_t, NormKind::One>(spec, o);
          case NormKind::Two: return run<scalar_t, NormKind::Two>(spec, o);
          case NormKind::Max: return run<scalar_t, NormKind::Max>(spec, o);
          case NormKind::Min: return run<scalar_t, NormKind::Min>(spec, o);
          case NormKind::General: return run<scalar_t, NormKind::General>(spec, o);
        }
      });
}

}  // namespace cpu
}  // namespace fusedloss
