// run_pt2 MODEL.pt2: loads an AOTInductor package written by export_and_package.py, whose
// forward(x, y) returns fusedloss losses and metrics, and runs it on the fixed inputs of
// example_inputs() there, in C++ with no Python. Prints "pt2 <four values>" for the tests.
//
// The package calls torch.ops.fusedloss.* through the dispatcher: including
// <fusedloss/fusedloss.h> (and linking FusedLoss::fusedloss) is what registers them here.

#include <fusedloss/fusedloss.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.pt2\n", argv[0]);
    return 2;
  }
  std::printf("fusedloss %s\n", fusedloss::version());
  torch::inductor::AOTIModelPackageLoader loader(argv[1]);
  const int64_t batch = 64;
  const auto x = (torch::linspace(-2, 2, batch * 4).reshape({batch, 4}).sin() * 3);
  const auto y = torch::arange(batch) % 3;
  torch::NoGradGuard no_grad;
  const std::vector<at::Tensor> outputs = loader.run({x, y});
  std::printf("pt2");
  for (const auto& v : outputs) std::printf(" %.9g", v.item<double>());
  std::printf("\n");
  return 0;
}
