// The ops that control the CPU gradient cache (cpu/gradient_allocator.h, fusedloss/memory.h).

#include <torch/library.h>

#include "cpu/gradient_allocator.h"
#include "fusedloss/memory.h"

namespace fusedloss {

void cpu_cache_clear() { cpu::clear_gradient_cache(); }
int64_t set_cpu_cache_limit(int64_t bytes) { return cpu::set_gradient_cache_limit(bytes); }
int64_t cpu_cache_bytes() { return cpu::gradient_cache_bytes(); }

}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def("cpu_cache_clear() -> ()", [] { fusedloss::cpu_cache_clear(); });
  m.def("set_cpu_cache_limit(int bytes) -> int",
        [](int64_t bytes) { return fusedloss::set_cpu_cache_limit(bytes); });
  m.def("cpu_cache_bytes() -> int", [] { return fusedloss::cpu_cache_bytes(); });
}
