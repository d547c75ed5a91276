// CPU engine instantiated for the binary classification and margin losses.

#include "cpu/pointwise_engine.h"
#include "cpu/vector_math.h"  // SIMD (libmvec) declarations of exp/log/tanh

namespace fusedloss {
namespace cpu {

void binary_loss_kernel(const PointwiseLossSpec& spec, const PointwiseOperands& operands) {
  engine::run_family(spec, operands, []<typename T>(const PointwiseLossSpec& s, auto&& fn) {
    visit_binary_formula<T>(std::get<BinaryLoss>(s.loss), s.param, s.param2, fn);
  });
}

}  // namespace cpu
}  // namespace fusedloss
