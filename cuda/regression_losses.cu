// CUDA engine instantiated for the regression losses (MSE, L1, Huber, SmoothL1).

#include "cuda/pointwise_engine.cuh"

namespace fusedloss {
namespace cuda {

void regression_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands) {
  engine::run_family(spec, operands, []<typename T>(const PointwiseLossSpec& s, auto&& fn) {
    visit_regression_formula<T>(std::get<RegressionLoss>(s.loss), s.param, fn);
  });
}

}  // namespace cuda
}  // namespace fusedloss
