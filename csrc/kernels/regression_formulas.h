#pragma once
// Per-element math of the regression losses, shared by the CPU and CUDA engines so the two can
// never drift apart. Every formula is a function of d = input - target and gives the loss value
// and d(loss)/d(input); d(loss)/d(target) is its negative (see OfDifference below). T is the
// accumulation type (float for float/half/bfloat16, double for double). visit_regression_formula
// is the one place a RegressionLoss becomes its formula.
//
// Branch conditions copy ATen's exactly, so the values at the kinks (d = 0 for L1, |d| = delta for
// Huber, |d| = beta for SmoothL1) and the propagation of NaN are the same as torch's.

#include "kernels/math.h"

namespace fusedloss {
namespace formulas {

// sign(d) with sign(0) = sign(NaN) = 0, as torch.sign and the subgradient torch uses for |d|.
template <typename T>
C10_HOST_DEVICE inline T sign(T v) {
  return T(T(0) < v) - T(v < T(0));
}

template <typename T>
struct MseLoss {
  C10_HOST_DEVICE T value(T d) const { return d * d; }
  C10_HOST_DEVICE T derivative(T d) const { return T(2) * d; }
};

template <typename T>
struct L1Loss {
  C10_HOST_DEVICE T value(T d) const { return absolute(d); }
  C10_HOST_DEVICE T derivative(T d) const { return sign(d); }
};

// 0.5 d^2 inside |d| < delta, delta (|d| - delta/2) outside.
template <typename T>
struct HuberLoss {
  T delta;
  C10_HOST_DEVICE T value(T d) const {
    const T z = absolute(d);
    return z < delta ? T(0.5) * z * z : delta * (z - T(0.5) * delta);
  }
  // clamp(d, -delta, delta), written so NaN passes through (as in torch) and x86 gets min/max.
  C10_HOST_DEVICE T derivative(T d) const {
    const T upper = d > delta ? delta : d;
    return upper < -delta ? -delta : upper;
  }
};

// Huber divided by beta: 0.5 d^2 / beta inside |d| < beta, |d| - beta/2 outside. beta = 0 is L1
// (the caller selects L1Loss then, as torch does, so that d = 0 gives gradient 0, not 0/0).
template <typename T>
struct SmoothL1Loss {
  T beta;
  C10_HOST_DEVICE T value(T d) const {
    const T z = absolute(d);
    return z < beta ? T(0.5) * z * z / beta : z - T(0.5) * beta;
  }
  // clamp(d / beta, -1, 1), NaN passing through.
  C10_HOST_DEVICE T derivative(T d) const {
    const T ratio = d / beta;
    const T upper = ratio > T(1) ? T(1) : ratio;
    return upper < T(-1) ? T(-1) : upper;
  }
};

}  // namespace formulas

enum class RegressionLoss { Mse, L1, Huber, SmoothL1 };

// A regression formula seen through the engines' element interface (input, target, weight,
// pos_weight).
template <typename F>
struct OfDifference {
  F f;
  template <typename T>
  C10_HOST_DEVICE T value(T x, T t, T, T) const {
    return f.value(x - t);
  }
  template <typename T>
  C10_HOST_DEVICE T grad_input(T x, T t, T, T) const {
    return f.derivative(x - t);
  }
};

// Calls fn(formula) with the formula of `loss` (param: delta or beta), in accumulation type T.
template <typename T, typename Fn>
decltype(auto) visit_regression_formula(RegressionLoss loss, double param, Fn&& fn) {
  using namespace formulas;
  switch (loss) {
    case RegressionLoss::Mse:
      return fn(OfDifference<MseLoss<T>>{{}});
    case RegressionLoss::L1:
      return fn(OfDifference<L1Loss<T>>{{}});
    case RegressionLoss::Huber:
      return fn(OfDifference<HuberLoss<T>>{{static_cast<T>(param)}});
    case RegressionLoss::SmoothL1:
      return fn(OfDifference<SmoothL1Loss<T>>{{static_cast<T>(param)}});
  }
  __builtin_unreachable();  // every enumerator is handled above (-Wswitch checks it)
}

}  // namespace fusedloss
