#pragma once
// fusedloss C++ API: fused loss functions as LibTorch operators.
//
//   #include <fusedloss/fusedloss.h>
//   auto loss = fusedloss::functional::mse_loss(prediction, target);
//   fusedloss::nn::HuberLoss criterion(torch::nn::HuberLossOptions().delta(0.5));
//   auto f1 = fusedloss::metrics::f1_score(logits, labels, "multiclass", 10);
//
// Including this header is enough to have the operators registered: it refers to a symbol of
// libfusedloss.so, so the linker keeps the library (even with --as-needed) and its static
// registrations run when the program starts.

#include "fusedloss/errors.h"
#include "fusedloss/functional.h"
#include "fusedloss/library.h"
#include "fusedloss/memory.h"
#include "fusedloss/metrics.h"
#include "fusedloss/modules.h"
#include "fusedloss/threshold_metrics.h"

namespace fusedloss {
namespace detail {
[[gnu::used]] static const char* (*const force_link_fusedloss)() = &fusedloss::version;
}  // namespace detail

}  // namespace fusedloss
