// Host side of the deferred CUDA errors (see deferred_errors.cuh): one record, flag and event per
// device, made at the first checking call on that device.

#include "cuda/deferred_errors.cuh"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAFunctions.h>

#include <mutex>
#include <vector>

#include "cuda/deferred_errors.h"

namespace fusedloss {
namespace cuda {
namespace {

struct DeviceErrors {
  BadValueRecord* record = nullptr;  // device memory
  int* flag = nullptr;               // mapped, page-locked host memory
  int* device_flag = nullptr;        // the same, as the device addresses it
  cudaEvent_t done = nullptr;        // recorded after the latest checking launch
  bool recorded = false;
  unsigned long long calls = 0;
};

std::mutex state_mutex;
std::vector<DeviceErrors> devices;  // by device index

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

void reset_record(DeviceErrors& d) {
  const BadValueRecord empty = empty_bad_value_record();
  C10_CUDA_CHECK(cudaMemcpy(d.record, &empty, sizeof(empty), cudaMemcpyHostToDevice));
  *reinterpret_cast<volatile int*>(d.flag) = 0;
}

// The current device's state, made on first use (one synchronous setup per device and process).
DeviceErrors& current_device_errors() {
  const int index = c10::cuda::current_device();
  std::lock_guard<std::mutex> lock(state_mutex);
  if (devices.size() <= static_cast<size_t>(index)) devices.resize(index + 1);
  DeviceErrors& d = devices[index];
  if (d.record != nullptr) return d;
  TORCH_CHECK(!capturing(at::cuda::getCurrentCUDAStream()),
              "fusedloss: the first checking fusedloss call on cuda:", index,
              " happened during CUDA-graph capture; run the loss once before capturing it (as "
              "for any warm-up), so that its error record can be set up");
  C10_CUDA_CHECK(cudaMalloc(&d.record, sizeof(BadValueRecord)));
  C10_CUDA_CHECK(cudaHostAlloc(&d.flag, sizeof(int), cudaHostAllocMapped));
  C10_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&d.device_flag), d.flag, 0));
  C10_CUDA_CHECK(cudaEventCreateWithFlags(&d.done, cudaEventDisableTiming));
  reset_record(d);
  return d;
}

// Copies the record (the error path: a synchronous copy is fine here), resets it and raises.
[[noreturn]] void fetch_and_raise(DeviceErrors& d) {
  BadValueRecord found;
  C10_CUDA_CHECK(cudaMemcpy(&found, d.record, sizeof(found), cudaMemcpyDeviceToHost));
  reset_record(d);
  raise_bad_value(found);
}

bool flagged(const DeviceErrors& d) {
  return d.flag != nullptr && *reinterpret_cast<volatile int*>(d.flag) != 0;
}

}  // namespace

void raise_finished_errors() {
  DeviceErrors& d = current_device_errors();
  if (!flagged(d) || !d.recorded || capturing(at::cuda::getCurrentCUDAStream())) return;
  const cudaError_t status = cudaEventQuery(d.done);
  if (status == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error: clear it
    return;
  }
  C10_CUDA_CHECK(status);
  fetch_and_raise(d);
}

ErrorSink error_sink(const char* op, BadValueKind kind, int64_t limit, int64_t extra) {
  raise_finished_errors();
  DeviceErrors& d = current_device_errors();
  ErrorSink sink;
  sink.record = d.record;
  sink.flag = d.device_flag;
  sink.call = ++d.calls & ((1ull << 23) - 1);
  sink.op = reinterpret_cast<unsigned long long>(op);
  sink.kind = static_cast<int32_t>(kind);
  sink.limit = limit;
  sink.extra = extra;
  return sink;
}

void after_launch(const ErrorSink& sink) {
  if (sink.record == nullptr) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (capturing(stream)) return;
  DeviceErrors& d = current_device_errors();
  if (synchronous_errors()) {
    C10_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (flagged(d)) fetch_and_raise(d);
    return;
  }
  C10_CUDA_CHECK(cudaEventRecord(d.done, stream));
  d.recorded = true;
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
    DeviceErrors& d = current_device_errors();
    if (flagged(d)) fetch_and_raise(d);
  }
}

}  // namespace cuda
}  // namespace fusedloss
