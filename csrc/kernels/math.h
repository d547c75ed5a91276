#pragma once
// Transcendental functions for the formulas, on the host and on CUDA devices, in float or double,
// and the numerically stable building blocks of the logistic losses.
//
// On the host these call the C library (expf, log1pf, ...). In the CPU engine's translation units
// they are declared SIMD-callable (see cpu/vector_math.h), so the compiler vectorizes them with
// glibc's libmvec.

#include <c10/macros/Macros.h>

#include <cmath>
#include <type_traits>

namespace fusedloss {

// The type every engine accumulates in: float for float32/float16/bfloat16, double for float64.
template <typename scalar_t>
using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

namespace formulas {

C10_HOST_DEVICE inline float exp_of(float v) { return expf(v); }
C10_HOST_DEVICE inline double exp_of(double v) { return exp(v); }
C10_HOST_DEVICE inline float sqrt_of(float v) { return sqrtf(v); }
C10_HOST_DEVICE inline double sqrt_of(double v) { return sqrt(v); }
C10_HOST_DEVICE inline float log_of(float v) { return logf(v); }
C10_HOST_DEVICE inline double log_of(double v) { return log(v); }
C10_HOST_DEVICE inline float log1p_of(float v) { return log1pf(v); }
C10_HOST_DEVICE inline double log1p_of(double v) { return log1p(v); }
C10_HOST_DEVICE inline float pow_of(float a, float b) { return powf(a, b); }
C10_HOST_DEVICE inline double pow_of(double a, double b) { return pow(a, b); }
C10_HOST_DEVICE inline float tanh_of(float v) { return tanhf(v); }
C10_HOST_DEVICE inline double tanh_of(double v) { return tanh(v); }
C10_HOST_DEVICE inline float absolute(float v) { return fabsf(v); }
C10_HOST_DEVICE inline double absolute(double v) { return fabs(v); }

// max(v, 0) that lets NaN through, as torch's clamp_min.
template <typename T>
C10_HOST_DEVICE inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// log(1 + e^z) without overflow: max(z, 0) + log1p(e^-|z|).
template <typename T>
C10_HOST_DEVICE inline T softplus(T z) {
  return (z > T(0) ? z : T(0)) + log1p_of(exp_of(-absolute(z)));
}

// 1 / (1 + e^-z) without overflow, from e^-|z| in (0, 1].
template <typename T>
C10_HOST_DEVICE inline T sigmoid(T z) {
  const T e = exp_of(-absolute(z));
  const T inv = T(1) / (T(1) + e);
  return z >= T(0) ? inv : e * inv;
}

}  // namespace formulas
}  // namespace fusedloss
