// The fusedloss operator namespace. Each op family adds its schemas with TORCH_LIBRARY_FRAGMENT in
// its own file; this file owns the namespace and the library's identity.

#include "fusedloss/library.h"

#include <torch/library.h>

#include "fusedloss/version.h"

namespace fusedloss {

const char* version() { return FUSEDLOSS_VERSION; }

}  // namespace fusedloss

TORCH_LIBRARY(fusedloss, m) {
  // The torch version the library was compiled against; the Python package compares it with the
  // running torch before it trusts the library.
  m.def("_build_info() -> str[]", [] {
    return std::vector<std::string>{FUSEDLOSS_VERSION, FUSEDLOSS_TORCH_VERSION};
  });
}
