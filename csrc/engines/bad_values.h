#pragma once
// Bad values in a loss's inputs (a class index out of range, a BCE probability outside [0, 1], a
// hinge label other than +-1): the record a kernel fills in, and the typed error it becomes.
//
// On the CPU the op raises at once. On CUDA the kernel writes the record into device memory and
// the error is raised later without stalling the stream (cuda/deferred_errors.h): by the next
// fusedloss call once the work is done, by fusedloss::check_errors(), or at once in synchronous
// mode. Either way the message is the one raise_bad_value builds (ops/bad_values.cpp).

#include <c10/util/string_view.h>

#include <cstdint>

namespace fusedloss {

enum class BadValueKind : int32_t {
  None = 0,
  ClassIndex,        // IndexError: index target not in [0, C) and not ignore_index
  MarginClassIndex,  // RuntimeError: multi_margin_loss target not in [0, C)
  Probability,       // RuntimeError: binary_cross_entropy input not in [0, 1]
  HingeLabel,        // ValueError: hinge_loss target not -1 or 1
  NegativeVariance,  // ValueError: gaussian_nll_loss var < 0
  MultilabelClassIndex,  // RuntimeError: multilabel_margin_loss target not in [0, C) nor -1
  CtcLabel,          // IndexError: ctc_loss label not in [0, C) (extra: the sample)
  CtcBlankLabel,     // ValueError: ctc_loss label equal to blank (extra: the sample)
  CtcInputLength,    // RuntimeError: input_lengths[position] not in [0, limit]
  CtcTargetLength,   // RuntimeError: target_lengths[position] negative (extra 0) or longer than
                     // the padded targets' limit (extra 1); or their sum, value, is not the
                     // limit concatenated targets hold (extra 2)
};

// Plain data, the same layout on the host and the device. `op` is the address of the op's name,
// a string literal: the device stores it and never reads it.
struct BadValueRecord {
  uint32_t lock;                // device-side spin lock of the writers
  int32_t kind;                 // BadValueKind; None while nothing was found
  unsigned long long key;       // (call sequence << 40) | position: the smallest is kept
  unsigned long long written_key;  // the key of the fields below
  unsigned long long count;     // bad elements found (all calls since the last report)
  unsigned long long op;        // const char* of the op's name
  int64_t position;             // flat position of the first bad element of the first bad call
  int64_t value;                // its value: an integer, or the bits of a double
  int64_t limit;                // number of classes, or of elements
  int64_t extra;                // ignore_index
};

// A record with nothing found (key at its maximum).
BadValueRecord empty_bad_value_record();

// The op's name as the one string with the program's lifetime that BadValueRecord::op holds (the
// only addresses raise_bad_value accepts there), for the names of fusedloss's checking ops;
// "fusedloss op" for any other.
const char* static_op_name(c10::string_view name);

// Throws the error the record describes (exception type as torch's for that mistake).
[[noreturn]] void raise_bad_value(const BadValueRecord& record);

// Synchronous mode (fusedloss::set_synchronous_errors; FUSEDLOSS_SYNC_ERRORS=1 turns it on at
// load): CUDA ops wait for their kernel and raise at once, as the CPU does.
bool synchronous_errors();

}  // namespace fusedloss
