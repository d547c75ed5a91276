# The pip torch keeps NCCL, cuDNN and the CUDA runtime in site-packages/nvidia/*/lib and finds them
# through its own RPATH at run time. When an executable is linked against it, ld looks for them
# too, and may find an older NCCL of a CUDA toolkit first ("undefined reference to ncclSignal").
# -rpath-link points ld at torch's own copies; it changes nothing at run time.
function(fusedloss_torch_link_paths out_var)
  set(options "")
  if(TORCH_INSTALL_PREFIX)
    file(GLOB dirs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
    foreach(dir IN LISTS dirs)
      if(IS_DIRECTORY "${dir}")
        list(APPEND options "-Wl,-rpath-link,${dir}")
      endif()
    endforeach()
  endif()
  set(${out_var} "${options}" PARENT_SCOPE)
endfunction()
