#pragma once
// Declares the C library's exp/log/tanh functions SIMD-callable, so that loops calling them vectorize
// through glibc's libmvec (the engine is compiled with -fno-math-errno: a call that may set errno
// cannot be vectorized). glibc declares them so only under -ffast-math, which we do not use.
// CMake defines FUSEDLOSS_HAVE_LIBMVEC after checking that libmvec has these functions.

#include <cmath>

#if defined(FUSEDLOSS_HAVE_LIBMVEC)
extern "C" {
__attribute__((simd("notinbranch"))) float expf(float) noexcept;
__attribute__((simd("notinbranch"))) float logf(float) noexcept;
__attribute__((simd("notinbranch"))) float log1pf(float) noexcept;
__attribute__((simd("notinbranch"))) float powf(float, float) noexcept;
__attribute__((simd("notinbranch"))) float tanhf(float) noexcept;
__attribute__((simd("notinbranch"))) double exp(double) noexcept;
__attribute__((simd("notinbranch"))) double log(double) noexcept;
__attribute__((simd("notinbranch"))) double log1p(double) noexcept;
__attribute__((simd("notinbranch"))) double pow(double, double) noexcept;
__attribute__((simd("notinbranch"))) double tanh(double) noexcept;
}
#endif
