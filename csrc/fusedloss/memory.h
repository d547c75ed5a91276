#pragma once
// The CPU gradient cache. Fused losses keep large CPU gradients (over 1 MiB) in a bounded cache
// when the gradient tensor dies (x.grad = None, zero_grad(set_to_none=True)), so that the next
// step's gradient of the same size reuses the memory instead of faulting fresh pages in.

#include <cstdint>

#include "fusedloss/library.h"

namespace fusedloss {

// Frees every cached block (nothing in use is touched).
FUSEDLOSS_API void cpu_cache_clear();

// Sets the most bytes the cache may hold (0 turns it off); returns the previous limit. The
// default is 2 GiB, or FUSEDLOSS_CPU_CACHE_BYTES when set at load.
FUSEDLOSS_API int64_t set_cpu_cache_limit(int64_t bytes);

// The bytes the cache holds now.
FUSEDLOSS_API int64_t cpu_cache_bytes();

}  // namespace fusedloss
