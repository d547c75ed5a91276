// Host side of the deferred CUDA errors (see deferred_errors.cuh): one record, flag and event per
// device, made at the first checking call on that device. All of a device's host state is read
// and written under one mutex, so threads that share a device neither race nor report one error
// twice.

#include "cuda/deferred_errors.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAFunctions.h>

#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include "cuda/deferred_errors.h"

namespace fusedloss {
namespace cuda {
namespace {

struct DeviceErrors {
  BadValueRecord* record = nullptr;  // device memory
  int* flag = nullptr;               // mapped, page-locked host memory
  int* device_flag = nullptr;        // the same, as the device addresses it
  cudaEvent_t done = nullptr;        // recorded after a checking launch (see after_launch)
  bool recorded = false;
  unsigned long long calls = 0;
};

std::mutex state_mutex;
std::deque<DeviceErrors> devices;  // by device index; a deque: growing keeps references valid

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

bool flagged(const DeviceErrors& d) {
  return d.flag != nullptr && *reinterpret_cast<volatile int*>(d.flag) != 0;
}

// The flag first: a kernel that records after this sets it again.
void reset_record(DeviceErrors& d) {
  *reinterpret_cast<volatile int*>(d.flag) = 0;
  const BadValueRecord empty = empty_bad_value_record();
  C10_CUDA_CHECK(cudaMemcpy(d.record, &empty, sizeof(empty), cudaMemcpyHostToDevice));
}

// The current device's state (state_mutex held), made on first use when `create`: one
// synchronous setup per device and process.
DeviceErrors* device_errors(bool create) {
  const int index = c10::cuda::current_device();
  if (devices.size() <= static_cast<size_t>(index)) devices.resize(index + 1);
  DeviceErrors& d = devices[index];
  if (d.record != nullptr || !create) return d.record != nullptr ? &d : nullptr;
  TORCH_CHECK(!capturing(at::cuda::getCurrentCUDAStream()),
              "fusedloss: the first checking fusedloss call on cuda:", index,
              " happened during CUDA-graph capture; run the loss once before capturing it (as "
              "for any warm-up), so that its error record can be set up");
  C10_CUDA_CHECK(cudaMalloc(&d.record, sizeof(BadValueRecord)));
  C10_CUDA_CHECK(cudaHostAlloc(&d.flag, sizeof(int), cudaHostAllocMapped));
  C10_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&d.device_flag), d.flag, 0));
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&d.done, cudaEventDisableTiming));
  reset_record(d);
  return &d;
}

// Copies the record (the error path: a synchronous copy is fine here) and resets it; empty when
// another stream's kernel was still writing it as it was reset (the error is then lost, not
// garbled).
std::optional<BadValueRecord> fetch(DeviceErrors& d) {
  BadValueRecord found;
  C10_CUDA_CHECK(cudaMemcpy(&found, d.record, sizeof(found), cudaMemcpyDeviceToHost));
  reset_record(d);
  d.recorded = false;
  if (static_cast<BadValueKind>(found.kind) == BadValueKind::None) return std::nullopt;
  return found;
}

}  // namespace

void raise_finished_errors() {
  std::optional<BadValueRecord> found;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    DeviceErrors* d = device_errors(/*create=*/false);  // none yet: nothing can be pending
    if (d == nullptr || !flagged(*d) || !d->recorded ||
        capturing(at::cuda::getCurrentCUDAStream())) {
      return;
    }
    const cudaError_t status = cudaEventQuery(d->done);
    if (status == cudaErrorNotReady) {
      (void)cudaGetLastError();  // not an error: clear it
      return;
    }
    C10_CUDA_CHECK(status);
    found = fetch(*d);
  }
  if (found) raise_bad_value(*found);
}

ErrorSink error_sink(const char* op, BadValueKind kind, int64_t limit, int64_t extra) {
  raise_finished_errors();
  std::lock_guard<std::mutex> lock(state_mutex);
  DeviceErrors& d = *device_errors(/*create=*/true);
  ErrorSink sink;
  sink.record = d.record;
  sink.flag = d.device_flag;
  sink.call = ++d.calls & ((1ull << 23) - 1);
  sink.op = reinterpret_cast<unsigned long long>(static_op_name(op));
  sink.kind = static_cast<int32_t>(kind);
  sink.limit = limit;
  sink.extra = extra;
  return sink;
}

void after_launch(const ErrorSink& sink) {
  if (sink.record == nullptr) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (capturing(stream)) return;
  std::optional<BadValueRecord> found;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    DeviceErrors& d = *device_errors(/*create=*/true);
    if (synchronous_errors()) {
      C10_CUDA_CHECK(cudaStreamSynchronize(stream));
      if (flagged(d)) found = fetch(d);
    } else if (!(flagged(d) && d.recorded)) {
      // Once something is flagged the event stays where it is: it was recorded after the launch
      // that flagged, and re-recording it every call would keep a host that runs ahead of the
      // GPU from ever seeing it complete.
      C10_CUDA_CHECK(cudaEventRecord(d.done, stream));
      d.recorded = true;
    }
  }
  if (found) raise_bad_value(*found);
}

void check_all_devices() {
  std::vector<int> used;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    for (size_t i = 0; i < devices.size(); ++i) {
      if (devices[i].record != nullptr) used.push_back(static_cast<int>(i));
    }
  }
  for (const int index : used) {
    const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(index));
    C10_CUDA_CHECK(cudaDeviceSynchronize());
    std::optional<BadValueRecord> found;
    {
      std::lock_guard<std::mutex> lock(state_mutex);
      DeviceErrors& d = *device_errors(/*create=*/false);
      if (flagged(d)) found = fetch(d);
    }
    if (found) raise_bad_value(*found);
  }
}

}  // namespace cuda
}  // namespace fusedloss
