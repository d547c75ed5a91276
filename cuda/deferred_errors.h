#pragma once
// Host side of the deferred CUDA errors that the operator layer calls (no CUDA types here); the
// kernels' side is cuda/deferred_errors.cuh.

namespace fusedloss {
namespace cuda {

// Waits for every device that has run a checking kernel, then raises its first recorded bad
// value, if any (fusedloss::check_errors()).
void check_all_devices();

}  // namespace cuda
}  // namespace fusedloss
