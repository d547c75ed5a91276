# CUDA architectures come from TORCH_CUDA_ARCH_LIST (PyTorch's convention, e.g. "8.0;9.0+PTX"),
# which torch's own CMake turns into -gencode flags. The default, 9.0+PTX (Hopper: H100/H200, and
# PTX that newer GPUs can JIT), needs no GPU to compile and keeps the build short. Without a value,
# torch's CMake would instead probe for a GPU, which fails on a machine without one.
set(FUSEDLOSS_DEFAULT_CUDA_ARCH_LIST "9.0+PTX")

macro(fusedloss_select_cuda_architectures)
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} OR "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    set(ENV{TORCH_CUDA_ARCH_LIST} "${FUSEDLOSS_DEFAULT_CUDA_ARCH_LIST}")
  endif()
  message(STATUS "fusedloss: TORCH_CUDA_ARCH_LIST=$ENV{TORCH_CUDA_ARCH_LIST}")
  # torch ignores CMAKE_CUDA_ARCHITECTURES (and warns if it is set); OFF leaves the flags to it.
  set(CMAKE_CUDA_ARCHITECTURES OFF)
endmacro()
