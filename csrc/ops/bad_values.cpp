// The errors that bad input values become, on every device, and the ops that control when CUDA
// raises them (see bad_values.h and fusedloss/errors.h).

#include "engines/bad_values.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "fusedloss/errors.h"
#ifdef FUSEDLOSS_WITH_CUDA
#include "cuda/deferred_errors.h"
#endif

namespace fusedloss {
namespace {

std::atomic<bool> synchronous{[] {
  const char* v = std::getenv("FUSEDLOSS_SYNC_ERRORS");
  return v != nullptr && std::string(v) != "" && std::string(v) != "0";
}()};

constexpr const char* kOpNames[] = {
    "cross_entropy",     "cross_entropy_with_z_loss", "nll_loss",   "linear_cross_entropy",
    "multi_margin_loss", "binary_cross_entropy",      "hinge_loss", "gaussian_nll_loss",
    "multilabel_margin_loss", "ctc_loss"};

double as_double(int64_t bits) {
  double d;
  std::memcpy(&d, &bits, sizeof(d));
  return d;
}

}  // namespace

BadValueRecord empty_bad_value_record() {
  BadValueRecord r{};
  r.key = std::numeric_limits<unsigned long long>::max();
  r.written_key = r.key;
  return r;
}

const char* static_op_name(c10::string_view name) {
  for (const char* known : kOpNames) {
    if (name == known) return known;
  }
  return "fusedloss op";
}

namespace {

// A record's op as one of the names above, compared by address: never an address read back from
// a device dereferenced as is.
const char* recorded_op_name(unsigned long long op) {
  for (const char* known : kOpNames) {
    if (reinterpret_cast<unsigned long long>(known) == op) return known;
  }
  return "fusedloss op";
}

}  // namespace

void raise_bad_value(const BadValueRecord& r) {
  const char* op = recorded_op_name(r.op);
  switch (static_cast<BadValueKind>(r.kind)) {
    case BadValueKind::ClassIndex:
      TORCH_CHECK_INDEX(false, "fusedloss.", op, ": target ", r.value,
                        " is out of bounds: expected a class in [0, ", r.limit,
                        ") or ignore_index (", r.extra, "); found at position ", r.position,
                        " of the flattened target");
    case BadValueKind::MarginClassIndex:
      TORCH_CHECK(false, "fusedloss.", op, ": target ", r.value,
                  " is out of range: expected a class in [0, ", r.limit, "); found at position ",
                  r.position);
    case BadValueKind::MultilabelClassIndex:
      TORCH_CHECK(false, "fusedloss.", op, ": target ", r.value,
                  " is out of range: expected a class in [0, ", r.limit,
                  ") or -1 (the end of a row's labels); found at position ", r.position,
                  " of the flattened target");
    case BadValueKind::Probability:
      TORCH_CHECK(false, "fusedloss.", op, ": all elements of input should be between 0 and 1; ",
                  r.count, " of ", r.limit, " are not (or are NaN), the first at position ",
                  r.position, ": ", as_double(r.value),
                  ". Pass probabilities, or use binary_cross_entropy_with_logits on logits.");
    case BadValueKind::HingeLabel:
      TORCH_CHECK_VALUE(false, "fusedloss.", op, ": target must hold only the labels -1 and 1; ",
                        r.count, " of ", r.limit, " elements do not, the first at position ",
                        r.position, ": ", as_double(r.value));
    case BadValueKind::NegativeVariance:
      TORCH_CHECK_VALUE(false, "fusedloss.", op, ": var has negative entry/entries; ", r.count,
                        " of ", r.limit, " elements are negative, the first at position ",
                        r.position, ": ", as_double(r.value));
    case BadValueKind::CtcLabel:
      TORCH_CHECK_INDEX(false, "fusedloss.", op, ": target label ", r.value,
                        " is out of bounds: expected a class in [0, ", r.limit,
                        "); found at position ", r.position, " of targets (sample ", r.extra,
                        ")");
    case BadValueKind::CtcBlankLabel:
      TORCH_CHECK_VALUE(false, "fusedloss.", op, ": target label ", r.value, " at position ",
                        r.position, " of targets (sample ", r.extra,
                        ") is the blank; a target may not contain the blank label");
    case BadValueKind::CtcInputLength:
      TORCH_CHECK(r.value >= 0, "fusedloss.", op,
                  ": Expected input_lengths to have value at least 0, but got value ", r.value,
                  " (sample ", r.position, ")");
      TORCH_CHECK(false, "fusedloss.", op, ": Expected input_lengths to have value at most ",
                  r.limit, ", but got value ", r.value, " (sample ", r.position, ")");
    case BadValueKind::CtcTargetLength:
      TORCH_CHECK(r.extra != 0, "fusedloss.", op,
                  ": Expected target_lengths to have value at least 0, but got value ", r.value,
                  " (sample ", r.position, ")");
      TORCH_CHECK(r.extra != 1, "fusedloss.", op, ": Expected tensor to have size at least ",
                  r.value, " at dimension 1, but got size ", r.limit,
                  " for argument #2 'targets' (target_lengths[", r.position, "] = ", r.value,
                  ")");
      TORCH_CHECK(false, "fusedloss.", op, ": Expected tensor to have size ", r.value,
                  " at dimension 0, but got size ", r.limit,
                  " for argument #2 'targets' (concatenated targets hold the sum of "
                  "target_lengths)");
    case BadValueKind::None:
      break;
  }
  TORCH_INTERNAL_ASSERT(false, "fusedloss: bad-value record of unknown kind ", r.kind);
}

bool synchronous_errors() { return synchronous.load(std::memory_order_relaxed); }

void check_errors() {
#ifdef FUSEDLOSS_WITH_CUDA
  cuda::check_all_devices();
#endif
}

bool set_synchronous_errors(bool on) { return synchronous.exchange(on); }

}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def("check_errors() -> ()", [] { fusedloss::check_errors(); });
  m.def("set_synchronous_errors(bool on) -> bool",
        [](bool on) { return fusedloss::set_synchronous_errors(on); });
}
