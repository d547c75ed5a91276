#pragma once
// The symbols of libfusedloss.so that C++ users call directly.

#if defined(_WIN32)
#define FUSEDLOSS_API __declspec(dllexport)
#else
#define FUSEDLOSS_API __attribute__((visibility("default")))
#endif

namespace fusedloss {

// The library's version, e.g. "0.1.0".
FUSEDLOSS_API const char* version();

}  // namespace fusedloss
