#pragma once
// The elementwise losses at the operator layer: what a declaration (pointwise_declarations.h)
// becomes. Declared<D> derives, from D::bind's parameters, the internal op's name and its typed
// call through the dispatcher, shared by the op layer and the autograd layer.

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>
#include <tuple>

#include "ops/pointwise_declarations.h"

namespace fusedloss {
namespace ops {

// What the internal op returns: the loss, d(loss)/d(input) and d(loss)/d(target) per element at
// the broadcast shape (empty unless asked for), up to the backward scale returned last (0-d for a
// reduced loss: 1, or the 1/n of a float16 'mean'; empty for 'none').
using PointwiseResult = std::tuple<Tensor, Tensor, Tensor, Tensor>;

template <typename D, typename Bind = decltype(&D::bind)>
struct Declared;

template <typename D, typename... Args>
struct Declared<D, PointwiseCall (*)(Args...)> {
  // "_<name>_forward": the public op's arguments, then which gradients to compute.
  static std::string internal_name() { return std::string("_") + D::kName + "_forward"; }
  static std::string internal_schema() {
    return internal_name() + "(" + without_defaults(D::kArguments) +
           ", bool compute_grad=False, bool compute_target_grad=False) -> (Tensor loss, "
           "Tensor grad_input, Tensor grad_target, Tensor backward_scale)";
  }
  static std::string public_schema() {
    return std::string(D::kName) + "(" + D::kArguments + ") -> Tensor";
  }

  static PointwiseResult forward(Args... args, bool compute_grad, bool compute_target_grad) {
    static const auto handle =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow(("fusedloss::" + internal_name()).c_str(), "")
            .template typed<PointwiseResult(Args..., bool, bool)>();
    return handle.call(args..., compute_grad, compute_target_grad);
  }

 private:
  // "float delta=1.0" -> "float delta": internal ops take every argument explicitly.
  static std::string without_defaults(const char* arguments) {
    std::string out;
    bool in_default = false;
    for (const char* p = arguments; *p != '\0'; ++p) {
      if (*p == '=') in_default = true;
      if (*p == ',') in_default = false;
      if (!in_default) out += *p;
    }
    return out;
  }
};

}  // namespace ops
}  // namespace fusedloss
