// Operator layer of ctc_loss: schemas (lengths as tensors, and as int lists like torch's overload),
// torch's shape rules (checked once for every backend, Meta included), the lengths and labels
// checked on the host where they live there, and the reduction of the engine's per-sample terms.
// Autograd: autograd/ctc_loss.cpp; engines: engines/ctc.h.

#include "ops/ctc_loss.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/tensor.h>
#include <torch/library.h>

#include <algorithm>

#include "cpu/gradient_allocator.h"
#include "engines/bad_values.h"
#include "engines/ctc.h"
#include "ops/arguments.h"
#include "ops/row_losses.h"

namespace fusedloss {
namespace ops {
namespace {

using at::Tensor;
constexpr c10::string_view kOp = "ctc_loss";

bool is_index_dtype(at::ScalarType t) { return at::isIntegralType(t, /*includeBool=*/false); }

// torch's rules: log_probs (T, N, C) or unbatched (T, C), not empty; targets padded (N, S) or
// concatenated (sum of target_lengths), integers; a length per sample; blank a class.
void check_problem(const Tensor& log_probs, const Tensor& targets, const Tensor& input_lengths,
                   const Tensor& target_lengths, int64_t blank) {
  TORCH_CHECK(log_probs.dim() == 3 || log_probs.dim() == 2, "fusedloss.", kOp,
              ": log_probs must be (T, N, C), or (T, C) unbatched, got shape ",
              log_probs.sym_sizes());
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(log_probs.scalar_type()), "fusedloss.", kOp,
                              ": log_probs must be float32, float64, float16 or bfloat16, got ",
                              log_probs.scalar_type());
  TORCH_CHECK(log_probs.sym_numel() != 0, "fusedloss.", kOp,
              ": log_probs tensor must not be empty, got shape ", log_probs.sym_sizes());
  TORCH_CHECK(is_index_dtype(targets.scalar_type()), "fusedloss.", kOp,
              ": targets must hold integer class indices, got ", targets.scalar_type());
  TORCH_CHECK(targets.dim() == 1 || targets.dim() == 2, "fusedloss.", kOp,
              ": targets must be padded (N, S) or concatenated (sum(target_lengths)), got shape ",
              targets.sym_sizes());
  const bool batched = log_probs.dim() == 3;
  const c10::SymInt N = batched ? log_probs.sym_size(1) : c10::SymInt(1);
  const c10::SymInt C = log_probs.sym_size(-1);
  TORCH_CHECK(targets.dim() == 1 || targets.sym_size(0) == N, "fusedloss.", kOp,
              ": Expected tensor to have size ", N, " at dimension 0, but got size ",
              targets.sym_size(0), " for argument #2 'targets' (padded targets: a row per sample)");
  for (const auto& [name, lengths] : {std::pair<const char*, const Tensor&>{"input_lengths",
                                                                          input_lengths},
                                      {"target_lengths", target_lengths}}) {
    TORCH_CHECK(is_index_dtype(lengths.scalar_type()), "fusedloss.", kOp, ": ", name,
                " must be integral, got ", lengths.scalar_type());
    TORCH_CHECK(lengths.dim() <= 1 && lengths.sym_numel() == N, "fusedloss.", kOp, ": ", name,
                " must be of size batch_size (", N, "), got shape ", lengths.sym_sizes());
    TORCH_CHECK(lengths.is_cpu() || lengths.device() == log_probs.device(), "fusedloss.", kOp,
                ": ", name, " must be on the CPU or on log_probs' device (", log_probs.device(),
                "), got ", lengths.device());
  }
  TORCH_CHECK(targets.is_cpu() || targets.device() == log_probs.device(), "fusedloss.", kOp,
              ": targets must be on the CPU or on log_probs' device (", log_probs.device(),
              "), got ", targets.device());
  TORCH_CHECK(blank >= 0 && C > blank, "fusedloss.", kOp,
              ": blank must be in label range [0, ", C, "), got ", blank);
}

BadValueRecord record(BadValueKind kind, int64_t position, int64_t value, int64_t limit,
                      int64_t extra = 0) {
  BadValueRecord r = empty_bad_value_record();
  r.kind = static_cast<int32_t>(kind);
  r.op = reinterpret_cast<unsigned long long>(static_op_name(kOp));
  r.position = position;
  r.value = value;
  r.limit = limit;
  r.extra = extra;
  return r;
}

// Lengths on the host are checked at once, on every device (the messages are torch's).
void check_lengths(const Tensor& input_lengths, const Tensor& target_lengths, int64_t T,
                   const Tensor& targets) {
  const int64_t* il = input_lengths.const_data_ptr<int64_t>();
  const int64_t* tl = target_lengths.const_data_ptr<int64_t>();
  const bool concatenated = targets.dim() == 1;
  int64_t total = 0;
  for (int64_t n = 0; n < input_lengths.numel(); ++n) {
    if (tl[n] < 0) raise_bad_value(record(BadValueKind::CtcTargetLength, n, tl[n], 0, 0));
    if (!concatenated && tl[n] > targets.size(1)) {
      raise_bad_value(record(BadValueKind::CtcTargetLength, n, tl[n], targets.size(1), 1));
    }
    total += tl[n];
    if (il[n] < 0 || il[n] > T) raise_bad_value(record(BadValueKind::CtcInputLength, n, il[n], T));
  }
  if (concatenated && total != targets.numel()) {
    raise_bad_value(record(BadValueKind::CtcTargetLength, 0, total, targets.numel(), 2));
  }
}

// Labels on the host: each sample's first target_lengths[n] (padding is never read).
void check_labels(const Tensor& targets, const Tensor& target_lengths, int64_t C, int64_t blank) {
  const int64_t* labels = targets.const_data_ptr<int64_t>();
  const int64_t* tl = target_lengths.const_data_ptr<int64_t>();
  const bool concatenated = targets.dim() == 1;
  for (int64_t n = 0, offset = 0; n < target_lengths.numel(); ++n) {
    const int64_t start = concatenated ? offset : n * targets.size(1);
    for (int64_t k = start; k < start + tl[n]; ++k) {
      if (labels[k] < 0 || labels[k] >= C) {
        raise_bad_value(record(BadValueKind::CtcLabel, k, labels[k], C, n));
      }
      if (labels[k] == blank) raise_bad_value(record(BadValueKind::CtcBlankLabel, k, blank, C, n));
    }
    offset += tl[n];
  }
}

// A copy of a host tensor on `device`, through pinned memory so that the copy does not wait for
// the device's queue.
Tensor host_to_device(const Tensor& host, at::Device device) {
  if (device.is_cpu()) return host;
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

template <void (*engine)(const CtcOperands&)>
std::tuple<Tensor, Tensor, Tensor> forward_on_device(const Tensor& log_probs, const Tensor& targets,
                                                     const Tensor& input_lengths,
                                                     const Tensor& target_lengths, int64_t blank,
                                                     c10::string_view reduction_name,
                                                     bool zero_infinity, bool compute_grad) {
  const auto reduction = parse_reduction(kOp, reduction_name);
  check_problem(log_probs, targets, input_lengths, target_lengths, blank);
  const bool batched = log_probs.dim() == 3;
  const Tensor lp = batched ? log_probs : log_probs.unsqueeze(1);
  const int64_t T = lp.size(0), N = lp.size(1), C = lp.size(2);
  const at::Device device = lp.device();
  CtcOperands o;
  o.log_probs = lp.stride(2) == 1 ? lp : lp.contiguous();
  o.blank = blank;
  o.concatenated = targets.dim() == 1;
  o.zero_infinity = zero_infinity;
  o.mean = reduction == at::Reduction::Mean;
  o.gradient_scale = folded_gradient_scale(reduction, log_probs.scalar_type(), N);

  Tensor labels = targets.to(at::kLong).contiguous();
  Tensor il = input_lengths.reshape({N}).to(at::kLong).contiguous();
  Tensor tl = target_lengths.reshape({N}).to(at::kLong).contiguous();
  if (device.is_cpu()) {  // the CPU op reads everything on the host (as torch)
    labels = labels.cpu();
    il = il.cpu();
    tl = tl.cpu();
  }
  const bool lengths_on_host = il.is_cpu() && tl.is_cpu();
  if (lengths_on_host) {
    check_lengths(il, tl, T, labels);
    if (labels.is_cpu()) check_labels(labels, tl, C, blank);
  }
  // The device re-checks what it reads (lengths and labels on the device: deferred errors).
  o.input_lengths = il.is_cpu() ? host_to_device(il, device) : il;
  o.target_lengths = tl.is_cpu() ? host_to_device(tl, device) : tl;
  o.targets = labels.is_cpu() ? host_to_device(labels, device) : labels;
  // The CUDA workspace's row: the longest target where the lengths are on the host, else what
  // the targets tensor can hold (capped by T: a longer target has no alignment, no lattice).
  int64_t widest_target = o.concatenated ? labels.numel() : labels.size(1);
  if (lengths_on_host && N > 0) widest_target = tl.max().item<int64_t>();
  o.lattice_width = 2 * std::min(widest_target, T) + 1;

  const auto acc_options = o.log_probs.options().dtype(accumulation_dtype(lp.scalar_type()));
  o.nll = at::empty({N}, acc_options);
  o.loss_terms = at::empty({N}, acc_options);
  if (compute_grad) o.grad = cpu::empty_gradient({T, N, C}, o.log_probs.options());
  engine(o);

  Tensor loss;
  const at::ScalarType dtype = log_probs.scalar_type();
  if (reduction == at::Reduction::None) {
    loss = batched ? o.nll.to(dtype) : o.nll.to(dtype).squeeze(0);
  } else if (device.is_cpu()) {
    // In float64 in sample order: the same bits for any thread count.
    double total = 0;
    const auto terms = o.loss_terms.to(at::kDouble);
    for (int64_t n = 0; n < N; ++n) total += terms.const_data_ptr<double>()[n];
    loss = at::full({}, total, log_probs.options());
  } else {
    loss = o.loss_terms.sum().to(dtype);  // summed in the accumulation dtype
  }
  Tensor grad = compute_grad ? o.grad.view(log_probs.sizes()) : at::empty({0}, lp.options());
  return {loss, grad, row_backward_scale(reduction, dtype, N, device)};
}

std::tuple<Tensor, Tensor, Tensor> forward_meta(const Tensor& log_probs, const Tensor& targets,
                                                const Tensor& input_lengths,
                                                const Tensor& target_lengths, int64_t blank,
                                                c10::string_view reduction_name,
                                                bool /*zero_infinity*/, bool compute_grad) {
  const auto reduction = parse_reduction(kOp, reduction_name);
  check_problem(log_probs, targets, input_lengths, target_lengths, blank);
  const auto options = log_probs.options();
  const auto acc_options = options.dtype(accumulation_dtype(log_probs.scalar_type()));
  const bool none = reduction == at::Reduction::None;
  Tensor loss = at::empty({}, options);
  if (none && log_probs.dim() == 3) loss = at::empty_symint({log_probs.sym_size(1)}, options);
  return {loss,
          compute_grad ? at::empty_symint(log_probs.sym_sizes(), options)
                       : at::empty({0}, options),
          none ? at::empty({0}, acc_options) : at::empty({}, acc_options)};
}

Tensor loss_only(const Tensor& log_probs, const Tensor& targets, const Tensor& input_lengths,
                 const Tensor& target_lengths, int64_t blank, c10::string_view reduction,
                 bool zero_infinity) {
  return std::get<0>(ctc_loss_forward(log_probs, targets, input_lengths, target_lengths, blank,
                                      reduction, zero_infinity, false));
}

// The int-list overload (torch's ctc_loss.IntList): the lengths become CPU tensors.
Tensor ctc_loss_with_length_lists(const Tensor& log_probs, const Tensor& targets,
                                  at::IntArrayRef input_lengths, at::IntArrayRef target_lengths,
                                  int64_t blank, c10::string_view reduction, bool zero_infinity) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::ctc_loss", "")
                           .typed<decltype(loss_only)>();
  const auto on_host = at::TensorOptions().dtype(at::kLong);
  return handle.call(log_probs, targets, at::tensor(input_lengths, on_host),
                     at::tensor(target_lengths, on_host), blank, reduction, zero_infinity);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> ctc_loss_forward(const Tensor& log_probs, const Tensor& targets,
                                                    const Tensor& input_lengths,
                                                    const Tensor& target_lengths, int64_t blank,
                                                    c10::string_view reduction,
                                                    bool zero_infinity, bool compute_grad) {
  static auto handle = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("fusedloss::_ctc_loss_forward", "")
                           .typed<decltype(forward_meta)>();
  return handle.call(log_probs, targets, input_lengths, target_lengths, blank, reduction,
                     zero_infinity, compute_grad);
}

}  // namespace ops
}  // namespace fusedloss

TORCH_LIBRARY_FRAGMENT(fusedloss, m) {
  m.def(
      "ctc_loss(Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, "
      "int blank=0, str reduction=\"mean\", bool zero_infinity=False) -> Tensor");
  m.def(
      "ctc_loss.IntList(Tensor log_probs, Tensor targets, int[] input_lengths, "
      "int[] target_lengths, int blank=0, str reduction=\"mean\", bool zero_infinity=False) -> "
      "Tensor");
  m.def(
      "_ctc_loss_forward(Tensor log_probs, Tensor targets, Tensor input_lengths, "
      "Tensor target_lengths, int blank, str reduction, bool zero_infinity, bool compute_grad) "
      "-> (Tensor loss, Tensor grad_log_probs, Tensor backward_scale)");
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeExplicitAutograd, m) {
  m.impl("ctc_loss", TORCH_FN(fusedloss::ops::loss_only));
}

TORCH_LIBRARY_IMPL(fusedloss, CompositeImplicitAutograd, m) {
  m.impl("ctc_loss.IntList", TORCH_FN(fusedloss::ops::ctc_loss_with_length_lists));
}

TORCH_LIBRARY_IMPL(fusedloss, CPU, m) {
  m.impl("_ctc_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cpu::ctc_kernel>));
}

#ifdef FUSEDLOSS_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedloss, CUDA, m) {
  m.impl("_ctc_loss_forward",
         TORCH_FN(fusedloss::ops::forward_on_device<fusedloss::cuda::ctc_kernel>));
}
#endif

TORCH_LIBRARY_IMPL(fusedloss, Meta, m) {
  m.impl("_ctc_loss_forward", TORCH_FN(fusedloss::ops::forward_meta));
}
