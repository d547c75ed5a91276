#pragma once
// Per-element math of the binary classification and margin losses (and the other losses of
// (input, target) with a target gradient of their own: Poisson NLL), shared by the CPU and CUDA
// engines. Each formula sees one element: input x, target t, its `weight` w and `pos_weight` p
// (1 where the loss has none), and gives the loss value, d(loss)/d(x) and, where torch has one,
// d(loss)/d(t). T is the accumulation type. Every logistic term uses the stable softplus and
// sigmoid of math.h, also where torch's own formula overflows (soft margin). visit_binary_formula
// is the one place a BinaryLoss becomes its formula.

#include "kernels/math.h"

namespace fusedloss {
namespace formulas {

// torch.nn.functional.binary_cross_entropy: x is a probability; each log is clamped at -100.
template <typename T>
struct BinaryCrossEntropy {
  static constexpr bool kChecksTarget = false;  // valid() judges the input
  // Bitwise & and |, not && and ||: no branch, so the CPU loop stays vectorized.
  C10_HOST_DEVICE bool valid(T x, T /*t*/) const { return (x >= T(0)) & (x <= T(1)); }
  C10_HOST_DEVICE T value(T x, T t, T w, T /*p*/) const {
    T log_x = log_of(x), log_1mx = log1p_of(-x);
    log_x = log_x < T(-100) ? T(-100) : log_x;
    log_1mx = log_1mx < T(-100) ? T(-100) : log_1mx;
    return w * ((t - T(1)) * log_1mx - t * log_x);
  }
  C10_HOST_DEVICE T grad_input(T x, T t, T w, T /*p*/) const {
    // torch divides by max(x (1 - x), 1e-12), its epsilon being the float nearest 1e-12.
    const T eps = static_cast<T>(1e-12f);
    const T denominator = (T(1) - x) * x;
    return w * (x - t) / (denominator < eps ? eps : denominator);
  }
  // Unclamped, as torch: infinite where x is exactly 0 or 1.
  C10_HOST_DEVICE T grad_target(T x, T /*t*/, T w, T /*p*/) const {
    return w * (log1p_of(-x) - log_of(x));
  }
};

// torch.nn.functional.binary_cross_entropy_with_logits with pos_weight p:
// (1 - t) x + (1 + (p - 1) t) softplus(-x), times w.
template <typename T>
struct BinaryCrossEntropyWithLogits {
  C10_HOST_DEVICE T value(T x, T t, T w, T p) const {
    const T log_weight = (p - T(1)) * t + T(1);
    return w * ((T(1) - t) * x + log_weight * softplus(-x));
  }
  C10_HOST_DEVICE T grad_input(T x, T t, T w, T p) const {
    return w * ((p * t + T(1) - t) * sigmoid(x) - p * t);
  }
  C10_HOST_DEVICE T grad_target(T x, T /*t*/, T w, T p) const {
    return w * (p * softplus(-x) - softplus(x));  // = -x when p = 1
  }
};

// torchvision.ops.sigmoid_focal_loss: alpha_t * BCE-with-logits * (1 - p_t)^gamma, where
// p = sigmoid(x), p_t = p t + (1 - p)(1 - t), alpha_t = alpha t + (1 - alpha)(1 - t) (alpha < 0:
// no weighting). kGammaTwo: the default gamma = 2, as a square instead of pow.
template <typename T, bool kGammaTwo = false>
struct SigmoidFocal {
  T alpha, gamma;

  struct Parts {
    T p, ce, m, m_gamma, dm_gamma, alpha_t;
  };
  C10_HOST_DEVICE Parts parts(T x, T t) const {
    Parts q;
    q.p = sigmoid(x);
    q.ce = (T(1) - t) * x + softplus(-x);
    q.m = q.p + t - T(2) * q.p * t;  // 1 - p_t
    // m^gamma and d(m^gamma)/dm (0 for gamma = 0, as torch's pow backward).
    if constexpr (kGammaTwo) {
      q.m_gamma = q.m * q.m;
      q.dm_gamma = T(2) * q.m;
    } else {
      q.m_gamma = pow_of(q.m, gamma);
      q.dm_gamma = gamma == T(0) ? T(0) : gamma * pow_of(q.m, gamma - T(1));
    }
    q.alpha_t = alpha < T(0) ? T(1) : alpha * t + (T(1) - alpha) * (T(1) - t);
    return q;
  }
  C10_HOST_DEVICE T value(T x, T t, T /*w*/, T /*p*/) const {
    const Parts q = parts(x, t);
    return q.alpha_t * q.ce * q.m_gamma;
  }
  C10_HOST_DEVICE T grad_input(T x, T t, T /*w*/, T /*p*/) const {
    const Parts q = parts(x, t);
    const T dm_dx = q.p * (T(1) - q.p) * (T(1) - T(2) * t);
    return q.alpha_t * ((q.p - t) * q.m_gamma + q.ce * q.dm_gamma * dm_dx);
  }
  C10_HOST_DEVICE T grad_target(T x, T t, T /*w*/, T /*p*/) const {
    const Parts q = parts(x, t);
    const T dalpha_dt = alpha < T(0) ? T(0) : T(2) * alpha - T(1);
    const T dm_dt = T(1) - T(2) * q.p;
    return dalpha_dt * q.ce * q.m_gamma + q.alpha_t * (-x * q.m_gamma + q.ce * q.dm_gamma * dm_dt);
  }
};

// torch.nn.functional.soft_margin_loss, log(1 + e^(-t x)), computed without overflow (torch's
// log1p(exp(-t x)) is inf once t x < -88 in float32).
template <typename T>
struct SoftMargin {
  C10_HOST_DEVICE T value(T x, T t, T /*w*/, T /*p*/) const { return softplus(-t * x); }
  C10_HOST_DEVICE T grad_input(T x, T t, T /*w*/, T /*p*/) const { return -t * sigmoid(-t * x); }
};

// torch.nn.functional.hinge_embedding_loss: x where t == 1, max(0, margin - x) where t == -1
// (and their sum for any other t, as torch). Like torch's clamp_min, the clamp passes gradient
// only where margin - x > 0.
template <typename T>
struct HingeEmbedding {
  T margin;
  C10_HOST_DEVICE T value(T x, T t, T /*w*/, T /*p*/) const {
    return (t != T(1) ? relu(margin - x) : T(0)) + (t != T(-1) ? x : T(0));
  }
  C10_HOST_DEVICE T grad_input(T x, T t, T /*w*/, T /*p*/) const {
    return ((t != T(1)) & (margin - x > T(0)) ? T(-1) : T(0)) + (t != T(-1) ? T(1) : T(0));
  }
};

// The binary SVM loss max(0, margin - t x) (squared: its square, the L2-SVM), labels t in {-1, 1}.
// The subgradient at margin - t x = 0 is that of torch's clamp_min: 0.
template <typename T, bool kSquared>
struct Hinge {
  static constexpr bool kChecksTarget = true;  // valid() judges the target
  T margin;
  C10_HOST_DEVICE bool valid(T /*x*/, T t) const { return (t == T(1)) | (t == T(-1)); }
  C10_HOST_DEVICE T value(T x, T t, T /*w*/, T /*p*/) const {
    const T h = relu(margin - t * x);
    return kSquared ? h * h : h;
  }
  C10_HOST_DEVICE T grad_input(T x, T t, T /*w*/, T /*p*/) const {
    const T a = margin - t * x;
    return a > T(0) ? -t * (kSquared ? T(2) * a : T(1)) : T(0);
  }
  C10_HOST_DEVICE T grad_target(T x, T t, T /*w*/, T /*p*/) const {
    const T a = margin - t * x;
    return a > T(0) ? -x * (kSquared ? T(2) * a : T(1)) : T(0);
  }
};

// torch.nn.functional.poisson_nll_loss. kLogInput: x is log(rate), loss e^x - t x; else x is the
// rate, loss x - t log(x + eps). kFull adds Stirling's approximation of log(t!),
// t log t - t + log(2 pi t) / 2, where t > 1 (0 elsewhere, as torch's masked_fill(t <= 1)).
// d/dt: -x (or -log(x + eps)), plus log t + 1/(2t) where the Stirling term is on (its derivative:
// log t + 1 - 1 + 1/(2t)); torch's own autograd gives NaN at t = 0 with full (0 * log 0), ours 0.
template <typename T, bool kLogInput, bool kFull>
struct PoissonNll {
  T eps;
  C10_HOST_DEVICE static bool stirling_on(T t) { return !(t <= T(1)); }  // NaN keeps its term
  C10_HOST_DEVICE T value(T x, T t, T /*w*/, T /*p*/) const {
    T v = kLogInput ? exp_of(x) - t * x : x - t * log_of(x + eps);
    if constexpr (kFull) {
      if (stirling_on(t)) v += t * log_of(t) - t + T(0.5) * log_of(T(6.283185307179586) * t);
    }
    return v;
  }
  C10_HOST_DEVICE T grad_input(T x, T t, T /*w*/, T /*p*/) const {
    return kLogInput ? exp_of(x) - t : T(1) - t / (x + eps);
  }
  C10_HOST_DEVICE T grad_target(T x, T t, T /*w*/, T /*p*/) const {
    T g = kLogInput ? -x : -log_of(x + eps);
    if constexpr (kFull) {
      if (stirling_on(t)) g += log_of(t) + T(0.5) / t;
    }
    return g;
  }
};

// torch.nn.functional.kl_div, pointwise: t (log t - x), with 0 where t = 0 (torch's xlogy), or
// for log_target e^t (t - x). d/dx: -t (or -e^t). d/dt: log t + 1 - x, as torch's autograd gives
// it through xlogy (NaN at t = 0, where it is t/t), or e^t (t - x + 1).
template <typename T, bool kLogTarget>
struct KlDiv {
  C10_HOST_DEVICE T value(T x, T t, T /*w*/, T /*p*/) const {
    if constexpr (kLogTarget) return exp_of(t) * (t - x);
    return (t == T(0) ? T(0) : t * log_of(t)) - t * x;
  }
  C10_HOST_DEVICE T grad_input(T /*x*/, T t, T /*w*/, T /*p*/) const {
    if constexpr (kLogTarget) return -exp_of(t);
    return -t;
  }
  C10_HOST_DEVICE T grad_target(T x, T t, T /*w*/, T /*p*/) const {
    if constexpr (kLogTarget) return exp_of(t) * (t - x + T(1));
    return (t == T(0) ? T(0) : log_of(t)) + t / t - x;
  }
};

// torch.nn.functional.margin_ranking_loss: max(0, margin - y (x1 - x2)), with x = input1,
// t = input2 and w = y (the engine's third operand). The kink gets clamp_min's subgradient, 0.
template <typename T>
struct MarginRanking {
  T margin;
  C10_HOST_DEVICE T value(T x, T t, T w, T /*p*/) const { return relu(margin - w * (x - t)); }
  C10_HOST_DEVICE T grad_input(T x, T t, T w, T /*p*/) const {
    return margin - w * (x - t) > T(0) ? -w : T(0);
  }
  C10_HOST_DEVICE T grad_target(T x, T t, T w, T /*p*/) const {
    return margin - w * (x - t) > T(0) ? w : T(0);
  }
};

// torch.nn.functional.gaussian_nll_loss: (log v + (x - y)^2 / v) / 2, v = max(var, eps) (+ log(2
// pi) / 2 when full), with x = input, t = var (the engine's target place) and w = the target y (its
// weight operand). d/dx = (x - y) / v; d/dvar = (1/v - (x - y)^2 / v^2) / 2 at the clamped v, the
// clamp passing the gradient as torch's (it clamps under no_grad); d/dy = -d/dx (the op's
// autograd). var < 0 is refused, as torch.
template <typename T, bool kFull>
struct GaussianNll {
  static constexpr bool kChecksTarget = true;  // valid() judges var
  T eps;
  C10_HOST_DEVICE bool valid(T /*x*/, T t) const { return !(t < T(0)); }
  C10_HOST_DEVICE T value(T x, T t, T w, T /*p*/) const {
    const T v = t < eps ? eps : t, d = x - w;
    const T half_log_two_pi = T(0.9189385332046727);
    return T(0.5) * (log_of(v) + d * d / v) + (kFull ? half_log_two_pi : T(0));
  }
  C10_HOST_DEVICE T grad_input(T x, T t, T w, T /*p*/) const {
    const T v = t < eps ? eps : t;
    return (x - w) / v;
  }
  C10_HOST_DEVICE T grad_target(T x, T t, T w, T /*p*/) const {
    const T v = t < eps ? eps : t, d = x - w;
    return T(0.5) * (T(1) / v - d * d / (v * v));
  }
};

}  // namespace formulas

enum class BinaryLoss {
  BinaryCrossEntropy,
  BinaryCrossEntropyWithLogits,
  SigmoidFocal,
  SoftMargin,
  HingeEmbedding,
  Hinge,
  PoissonNll,
  KlDiv,
  MarginRanking,
  GaussianNll,
};

// Calls fn(formula) with the formula of `loss`, in accumulation type T. param: alpha (focal),
// margin (hinge, ranking) or eps (Poisson); param2: gamma (focal), squared (hinge, 0 or 1),
// log_input + 2 full (Poisson), log_target (KL, 0 or 1) or full (Gaussian NLL, 0 or 1); eps for
// Gaussian NLL too.
template <typename T, typename Fn>
decltype(auto) visit_binary_formula(BinaryLoss loss, double param, double param2, Fn&& fn) {
  using namespace formulas;
  const T p = static_cast<T>(param), p2 = static_cast<T>(param2);
  switch (loss) {
    case BinaryLoss::BinaryCrossEntropy:
      return fn(BinaryCrossEntropy<T>{});
    case BinaryLoss::BinaryCrossEntropyWithLogits:
      return fn(BinaryCrossEntropyWithLogits<T>{});
    case BinaryLoss::SigmoidFocal:
      if (param2 == 2) return fn(SigmoidFocal<T, true>{p, p2});
      return fn(SigmoidFocal<T>{p, p2});
    case BinaryLoss::SoftMargin:
      return fn(SoftMargin<T>{});
    case BinaryLoss::HingeEmbedding:
      return fn(HingeEmbedding<T>{p});
    case BinaryLoss::Hinge:
      if (param2 != 0) return fn(Hinge<T, true>{p});
      return fn(Hinge<T, false>{p});
    case BinaryLoss::PoissonNll:
      if (param2 == 0) return fn(PoissonNll<T, false, false>{p});
      if (param2 == 1) return fn(PoissonNll<T, true, false>{p});
      if (param2 == 2) return fn(PoissonNll<T, false, true>{p});
      return fn(PoissonNll<T, true, true>{p});
    case BinaryLoss::KlDiv:
      if (param2 != 0) return fn(KlDiv<T, true>{});
      return fn(KlDiv<T, false>{});
    case BinaryLoss::MarginRanking:
      return fn(MarginRanking<T>{p});
    case BinaryLoss::GaussianNll:
      if (param2 != 0) return fn(GaussianNll<T, true>{p});
      return fn(GaussianNll<T, false>{p});
  }
  __builtin_unreachable();  // every enumerator is handled above (-Wswitch checks it)
}

}  // namespace fusedloss
