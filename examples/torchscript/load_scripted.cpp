// load_scripted MODEL.pt: loads a scripted module saved by script_and_save.py, whose forward(x, y)
// returns a fusedloss loss, and runs forward and backward on the fixed inputs of
// script_and_save.py. Prints "loss <value>" and "grad_norm <value>" for the tests to compare.
//
// Including <fusedloss/fusedloss.h> is what registers torch.ops.fusedloss.* in this process.

#include <fusedloss/fusedloss.h>
#include <torch/script.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.pt\n", argv[0]);
    return 2;
  }
  torch::jit::Module module = torch::jit::load(argv[1]);
  // The same inputs as example_inputs() in script_and_save.py.
  const auto x = torch::linspace(-1, 1, 64 * 4).reshape({64, 4});
  const auto y = torch::linspace(0, 1, 64).reshape({64, 1});

  const auto loss = module.forward({x, y}).toTensor();
  loss.backward();
  double squared = 0;
  for (const auto& p : module.parameters()) squared += p.grad().pow(2).sum().item<double>();
  std::printf("loss %.9g\ngrad_norm %.9g\n", loss.item<double>(), std::sqrt(squared));
  return 0;
}
