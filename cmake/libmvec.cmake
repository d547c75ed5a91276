# glibc's vector math library (libmvec): with it, the CPU engine's loops over exp/log vectorize.
# Checked by compiling and linking a loop that needs the float and double functions we declare
# in csrc/cpu/vector_math.h; without it the engine calls the scalar functions (same values).
include(CheckCXXSourceCompiles)
set(CMAKE_REQUIRED_FLAGS "-O2 -fopenmp-simd -fno-math-errno -mavx2")
set(CMAKE_REQUIRED_LIBRARIES mvec)
check_cxx_source_compiles([[
#include <cmath>
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
float a[64]; double b[64];
int main() {
#pragma omp simd
  for (int i = 0; i < 64; ++i) {
    a[i] = expf(a[i]) + logf(a[i]) + log1pf(a[i]) + powf(a[i], 1.5f) + tanhf(a[i]);
    b[i] = exp(b[i]) + log(b[i]) + log1p(b[i]) + pow(b[i], 1.5) + tanh(b[i]);
  }
  return static_cast<int>(a[0] + b[0]);
}]] FUSEDLOSS_HAVE_LIBMVEC)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_LIBRARIES)
if(FUSEDLOSS_HAVE_LIBMVEC)
  target_compile_definitions(fusedloss PRIVATE FUSEDLOSS_HAVE_LIBMVEC)
  target_link_libraries(fusedloss PRIVATE mvec)
else()
  message(STATUS "fusedloss: no libmvec; exp/log in the CPU loops stay scalar")
endif()
