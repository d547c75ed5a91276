// Trains the same small MLP twice on generated data, once with torch::nn::MSELoss and once with
// fusedloss::nn::MSELoss, from the same initial weights, and prints both losses per epoch. The two
// runs must agree: the exit status is non-zero if they drift apart.

#include <fusedloss/fusedloss.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>

namespace {

torch::nn::Sequential make_model() {
  return torch::nn::Sequential(torch::nn::Linear(3, 32), torch::nn::Tanh(),
                               torch::nn::Linear(32, 1));
}

}  // namespace

int main() {
  torch::manual_seed(0);
  // y = 2 x0 - 3 x1 + 0.5 x2^2 + noise
  const auto x = torch::randn({512, 3});
  const auto y = (2 * x.select(1, 0) - 3 * x.select(1, 1) + 0.5 * x.select(1, 2).pow(2) +
                  0.1 * torch::randn({512}))
                     .unsqueeze(1);

  auto reference_model = make_model();
  auto fused_model = make_model();
  {
    torch::NoGradGuard no_grad;
    auto src = reference_model->parameters();
    auto dst = fused_model->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  torch::optim::SGD reference_opt(reference_model->parameters(), 0.05);
  torch::optim::SGD fused_opt(fused_model->parameters(), 0.05);
  torch::nn::MSELoss reference_loss;
  fusedloss::nn::MSELoss fused_loss;

  std::printf("fusedloss %s\n%5s %14s %14s\n", fusedloss::version(), "epoch", "torch MSELoss",
              "fusedloss");
  double worst = 0;
  for (int epoch = 1; epoch <= 30; ++epoch) {
    reference_opt.zero_grad();
    fused_opt.zero_grad();
    auto a = reference_loss(reference_model->forward(x), y);
    auto b = fused_loss(fused_model->forward(x), y);
    a.backward();
    b.backward();
    reference_opt.step();
    fused_opt.step();
    const double va = a.item<double>(), vb = b.item<double>();
    worst = std::max(worst, std::abs(va - vb) / std::max(1e-12, std::abs(va)));
    if (epoch % 5 == 0 || epoch == 1) std::printf("%5d %14.6f %14.6f\n", epoch, va, vb);
  }
  std::printf("largest relative difference: %.3g\n", worst);
  if (worst > 1e-4) {
    std::printf("FAILED: the two runs disagree\n");
    return 1;
  }
  std::printf("the two runs agree\n");
  return 0;
}
