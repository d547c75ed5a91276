// CUDA engine instantiated for the binary classification and margin losses.

#include "cuda/pointwise_engine.cuh"

namespace fusedloss {
namespace cuda {

void binary_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands) {
  engine::run_family(spec, operands, []<typename T>(const PointwiseLossSpec& s, auto&& fn) {
    visit_binary_formula<T>(std::get<BinaryLoss>(s.loss), s.param, s.param2, fn);
  });
}

}  // namespace cuda
}  // namespace fusedloss
