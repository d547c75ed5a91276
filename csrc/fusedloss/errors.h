#pragma once
// Bad values found on a CUDA device (a class index out of range, a BCE input outside [0, 1], a
// hinge label other than +-1) are recorded by the kernel instead of stopping the stream: the loss
// of the affected rows is NaN, and the error (the same typed error as on the CPU, naming the value
// and its position) is raised by the next fusedloss call once that work has finished, or by
// check_errors(). With synchronous errors on, every CUDA op waits for its kernel and raises at
// once, as on the CPU (and as the environment variable FUSEDLOSS_SYNC_ERRORS=1 sets at load).

#include "fusedloss/library.h"

namespace fusedloss {

// Waits for the work queued on every device that ran a fusedloss kernel and raises the first bad
// value recorded since the last report, if any. A synchronization: call it where one is cheap
// (e.g. after a CUDA-graph replay, or once per logging step).
FUSEDLOSS_API void check_errors();

// Turns synchronous errors on or off; returns the previous setting.
FUSEDLOSS_API bool set_synchronous_errors(bool on);

}  // namespace fusedloss
