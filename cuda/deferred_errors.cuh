#pragma once
// Deferred errors on CUDA: a kernel that meets a bad value (a class index out of range, a BCE
// input outside [0, 1], ...) records it in a per-device BadValueRecord in device memory and sets a
// flag in mapped host memory, instead of trapping or making the host wait. The host looks at that
// flag (a plain load, no CUDA call) at the next fusedloss call on the device, and only once the
// work it belongs to has finished (an event query, never a wait) copies the record and raises the
// typed error (engines/bad_values.h). During CUDA-graph capture nothing is queried; the kernels of a
// replayed graph still record, and fusedloss::check_errors() reports it. In synchronous mode the
// op waits for its kernel and raises at once.
//
// The record keeps the smallest (call, position) key: the first bad element of the earliest call.

#include <cuda_runtime.h>

#include <cstdint>

#include "engines/bad_values.h"

namespace fusedloss {
namespace cuda {

// What a kernel needs to report a bad value; record == nullptr turns reporting off.
struct ErrorSink {
  BadValueRecord* record = nullptr;  // device memory
  int* flag = nullptr;               // mapped host memory: 1 once anything was recorded
  unsigned long long call = 0;       // the call's sequence number (23 bits)
  unsigned long long op = 0;         // const char* of the op's name
  int32_t kind = 0;
  int64_t limit = 0, extra = 0;
};

// The sink of the current device for one call of `op`, after raising what earlier calls recorded
// (if their work has finished).
ErrorSink error_sink(const char* op, BadValueKind kind, int64_t limit, int64_t extra = 0);

// After the launches that use `sink`: marks the work to wait for, or in synchronous mode waits
// and raises.
void after_launch(const ErrorSink& sink);

// Raises what the current device recorded, if the work has finished; never waits.
void raise_finished_errors();

#ifdef __CUDACC__
// Records one bad element (or `count` of them, the first at `position`). Rare by nature, so the
// writers of the position and value may take a lock: only a thread that lowers the key does.
__device__ inline void report_bad_value(const ErrorSink& s, int64_t position, int64_t value,
                                        unsigned long long count = 1) {
  BadValueRecord* r = s.record;
  if (r == nullptr) return;
  atomicAdd(&r->count, count);
  constexpr unsigned long long kPositionLimit = (1ull << 40) - 1;
  const unsigned long long p = static_cast<unsigned long long>(position);
  const unsigned long long key = (s.call << 40) | (p < kPositionLimit ? p : kPositionLimit);
  if (atomicMin(&r->key, key) < key) return;  // an earlier element is recorded already
  while (atomicCAS(&r->lock, 0u, 1u) != 0u) __nanosleep(64);
  __threadfence();
  volatile BadValueRecord* v = r;
  if (key <= v->written_key) {
    v->written_key = key;
    v->op = s.op;
    v->kind = s.kind;
    v->position = position;
    v->value = value;
    v->limit = s.limit;
    v->extra = s.extra;
  }
  __threadfence();
  atomicExch(&r->lock, 0u);
  *reinterpret_cast<volatile int*>(s.flag) = 1;
  __threadfence_system();
}
#endif

}  // namespace cuda
}  // namespace fusedloss
