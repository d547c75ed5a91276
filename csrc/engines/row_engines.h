#pragma once
// The row engines' interface, implemented once for the CPU (csrc/cpu/) and once for CUDA (cuda/):
// cross entropy and the multi-class hinge over R rows of C contiguous logits, and nll_loss (one
// log-probability picked per row). The operator layer
// lays the rows out and allocates the outputs; the engine does everything else, the reduction
// over rows included (the formulas are in kernels/multiclass_loss.h).

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fusedloss {

struct CrossEntropySpec {
  const char* op = "cross_entropy";  // the public op's name, for errors (a string literal)
  int64_t num_classes = 0;
  int64_t ignore_index = -100;
  double label_smoothing = 0;
  double z_loss = 0;
  double softcap = 0;  // 0: none
  bool probability_targets = false;
  bool check_target = true;  // bad class indices raise (else their rows are NaN)
  // Whole-op mode (operands.loss defined):
  at::Reduction::Reduction reduction = at::Reduction::Mean;
  // 'mean' only: the 1/denominators may go into the gradient (folds_mean_into_gradient). What the
  // engine does not fold in, it returns in backward_scale.
  bool fold_mean = false;
};

// Rows of logits and what the engine writes. Two modes:
//  - whole op (cross_entropy): loss, z_loss and backward_scale are defined; the engine checks the
//    targets, finds the denominators of 'mean' and reduces;
//  - rows (the chunks of linear_cross_entropy): row_loss (and row_z_loss) are defined; the op
//    layer passes the gradient factors and reduces. grad_input may alias logits (in place).
struct CrossEntropyOperands {
  at::Tensor logits;  // (R, C)
  at::Tensor target;  // (R) int64 class indices, or (R, C) probabilities of logits' dtype
  at::Tensor weight;  // (C) of logits' dtype, or undefined

  at::Tensor loss;            // whole op: (R) for 'none', else 0-d; logits' dtype
  at::Tensor z_loss;          // whole op: the z-loss part of loss, same shape and dtype
  at::Tensor backward_scale;  // whole op, reduced: 0-d, accumulation dtype (see fold_mean)

  at::Tensor grad_scales;  // rows: (2) accumulation dtype, factors of the loss and z-loss terms
  at::Tensor row_loss;     // rows: (R) accumulation dtype, cross entropy per row
  at::Tensor row_z_loss;   // rows: (R) accumulation dtype, z-loss per row, or undefined
  int64_t row_offset = 0;  // rows: the flat target position of row 0 (for errors)

  at::Tensor grad_input;   // (R, C) or undefined
  at::Tensor grad_target;  // (R, C) (probability targets only) or undefined
};

struct MultiMarginSpec {
  int64_t p = 1;
  double margin = 1;
};

struct MultiMarginOperands {
  at::Tensor input;       // (R, C)
  at::Tensor target;      // (R) int64 (on CUDA checked by the kernel)
  at::Tensor weight;      // (C) or undefined
  double grad_scale = 1;  // folded into the gradient
  at::Tensor row_loss;    // (R) accumulation dtype
  at::Tensor grad_input;  // (R, C) or undefined
};

// nll_loss over an input laid out (outer, C, inner), contiguous: row r = o * inner + i picks
// input[o, target[r], i]. Forward reads only the picked elements; backward writes the whole
// gradient in one pass (zeros but the picked element). Bad targets (outside [0, C), not
// ignore_index) weigh NaN: their row's loss and a 'mean' are NaN; CUDA records the first for a
// deferred IndexError when check_target (the CPU op layer has raised already).
struct NllSpec {
  const char* op = "nll_loss";  // a string literal, for errors
  int64_t num_classes = 0, inner = 1;
  int64_t ignore_index = -100;
  bool check_target = true;
  at::Reduction::Reduction reduction = at::Reduction::Mean;
};

struct NllOperands {
  at::Tensor input;         // (outer, C, inner) contiguous
  at::Tensor target;        // (R) int64 contiguous, R = outer * inner
  at::Tensor weight;        // (C) of input's dtype, or undefined
  at::Tensor loss;          // (R) for 'none', else 0-d; input's dtype
  at::Tensor total_weight;  // reduced: 0-d accumulation dtype, the summed weights of counted rows
};

struct NllBackwardOperands {
  at::Tensor grad_output;          // (R) for 'none', else 0-d
  int64_t grad_output_stride = 1;  // 'none': 1, or 0 for one value broadcast to every row
  at::Tensor target;               // (R) int64 contiguous
  at::Tensor weight;               // (C) of grad_input's dtype, or undefined
  at::Tensor total_weight;  // reduced: 0-d accumulation dtype ('mean' divides the gradient by it)
  at::Tensor grad_input;    // (outer, C, inner) contiguous, written whole
};

// cosine_embedding_loss over R pairs of rows of D (kernels/cosine_embedding.h): per row three
// sums, then the loss and, when asked, both inputs' gradients, written once each.
struct CosineEmbeddingSpec {
  double margin = 0;
};

struct CosineEmbeddingOperands {
  at::Tensor input1, input2;  // (R, D) contiguous, one dtype
  at::Tensor target;          // (R) of the inputs' dtype: 1, -1 (anything else: loss 0)
  double grad_scale = 1;      // folded into the gradients (1/R for a folded 'mean')
  at::Tensor row_loss;        // (R) accumulation dtype
  at::Tensor grad1, grad2;    // (R, D) or undefined
};

// triplet_margin_loss over R triplets of rows of D (kernels/triplet_margin.h): per row the norms
// of two (three with swap) differences, then the loss and, when asked, the three gradients,
// written once each.
struct TripletMarginSpec {
  double margin = 1, p = 2, eps = 1e-6;
  bool swap = false;
};

struct TripletMarginOperands {
  at::Tensor anchor, positive, negative;  // (R, D) contiguous, one dtype
  double grad_scale = 1;                  // folded into the gradients (1/R for a folded 'mean')
  at::Tensor row_loss;                    // (R) accumulation dtype
  at::Tensor grad_anchor, grad_positive, grad_negative;  // (R, D) each, or undefined
};

// multilabel_margin_loss over R rows of C scores (kernels/multilabel_margin.h): each row's labels
// are its target's entries before the first -1; the loss sums the hinge of every (label,
// non-label) pair, over C. The engine writes each row's loss and, when asked, its gradient once.
// A label outside [0, C) (or an entry below -1) makes its row NaN; CUDA records the first for a
// deferred error (the CPU op layer has raised already).
struct MultilabelMarginOperands {
  at::Tensor input;         // (R, C) contiguous
  at::Tensor target;        // (R, C) int64 contiguous
  at::Tensor label_counts;  // CUDA: (R, C) int32 scratch, how often each class is a label
  double grad_scale = 1;    // folded into the gradient (1/R for a folded 'mean')
  at::Tensor row_loss;      // (R) accumulation dtype
  at::Tensor grad_input;    // (R, C) or undefined
};

// jensen_shannon_divergence over R rows of C student and teacher logits (kernels/jensen_shannon.h):
// per row both log-softmaxes, the divergence and, when asked, the student's gradient, written
// once. Rows whose label is ignore_index count 0 (gradient 0).
struct JsdSpec {
  double beta = 0.5, temperature = 1;
  int64_t ignore_index = -100;
};

struct JsdOperands {
  at::Tensor student, teacher;  // (R, C) contiguous, one dtype
  at::Tensor labels;            // (R) int64, or undefined (no row ignored)
  double grad_scale = 1;        // folded into the gradient (1/R for a folded 'mean')
  at::Tensor row_loss;          // (R) accumulation dtype
  at::Tensor grad_input;        // (R, C) or undefined
};

// linear_log_probs over R rows of V logits (kernels/log_probs.h). Forward: per row log p(target),
// the entropy and the log-sum-exp of softmax(logits / T). Backward: the logits' gradient from the
// upstream gradients of the two outputs, written once (it may overwrite the logits). Rows whose
// target is ignore_index give 0 and gradient 0; a target outside [0, V) gives NaN (the op layer
// has checked them on the CPU; CUDA records the first for a deferred IndexError).
struct LogProbsSpec {
  double temperature = 1;
  int64_t ignore_index = -100;
};

struct LogProbsOperands {
  at::Tensor logits;  // (R, V) contiguous
  at::Tensor target;  // (R) int64 contiguous
  // Accumulation dtype, (R) each: written by the forward, read by the backward.
  at::Tensor log_probs, entropy, log_sum_exp;
  // Backward: (R) accumulation dtype each, or undefined (a zero gradient).
  at::Tensor grad_log_probs, grad_entropy;
  at::Tensor grad_input;  // backward: (R, V), may alias logits
};

namespace cpu {
void log_probs_kernel(const LogProbsSpec& spec, const LogProbsOperands& operands);
void log_probs_backward_kernel(const LogProbsSpec& spec, const LogProbsOperands& operands);
void jensen_shannon_kernel(const JsdSpec& spec, const JsdOperands& operands);
void multilabel_margin_kernel(const MultilabelMarginOperands& operands);
void triplet_margin_kernel(const TripletMarginSpec& spec, const TripletMarginOperands& operands);
void cosine_embedding_kernel(const CosineEmbeddingSpec& spec,
                             const CosineEmbeddingOperands& operands);
void nll_loss_kernel(const NllSpec& spec, const NllOperands& operands);
void nll_loss_backward_kernel(const NllSpec& spec, const NllBackwardOperands& operands);
void cross_entropy_kernel(const CrossEntropySpec& spec, const CrossEntropyOperands& operands);
void multi_margin_kernel(const MultiMarginSpec& spec, const MultiMarginOperands& operands);
}  // namespace cpu
namespace cuda {
void log_probs_kernel(const LogProbsSpec& spec, const LogProbsOperands& operands);
void log_probs_backward_kernel(const LogProbsSpec& spec, const LogProbsOperands& operands);
void jensen_shannon_kernel(const JsdSpec& spec, const JsdOperands& operands);
void multilabel_margin_kernel(const MultilabelMarginOperands& operands);
void triplet_margin_kernel(const TripletMarginSpec& spec, const TripletMarginOperands& operands);
void cosine_embedding_kernel(const CosineEmbeddingSpec& spec,
                             const CosineEmbeddingOperands& operands);
void nll_loss_kernel(const NllSpec& spec, const NllOperands& operands);
void nll_loss_backward_kernel(const NllSpec& spec, const NllBackwardOperands& operands);
void cross_entropy_kernel(const CrossEntropySpec& spec, const CrossEntropyOperands& operands);
// Records the first class index of `target` (R int64) outside [0, classes) and not ignore_index
// for a deferred IndexError of `op` (a string literal); one launch, no synchronization.
void record_bad_class_targets(const char* op, const at::Tensor& target, int64_t classes,
                              int64_t ignore_index);
// The total memory of a device, as the driver reports it (no synchronization).
int64_t device_memory_bytes(c10::DeviceIndex device);
void multi_margin_kernel(const MultiMarginSpec& spec, const MultiMarginOperands& operands);
}  // namespace cuda

}  // namespace fusedloss
