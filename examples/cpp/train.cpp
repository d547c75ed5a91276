// A LibTorch trainer with no Python: trains the same small MLP twice on generated data, once with
// a torch::nn loss and once with its fusedloss::nn drop-in, from the same initial weights, and
// prints both losses per epoch — for regression (MSELoss) and for imbalanced binary
// classification (BCEWithLogitsLoss with pos_weight). The runs must agree: the exit status is
// non-zero if they drift apart.

#include <fusedloss/fusedloss.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace {

torch::nn::Sequential make_model() {
  return torch::nn::Sequential(torch::nn::Linear(3, 32), torch::nn::Tanh(),
                               torch::nn::Linear(32, 1));
}

// Trains two copies of one model, with `reference` and with `fused`; returns the largest relative
// difference between their losses over the epochs, and the fused model.
template <typename Reference, typename Fused>
std::pair<double, torch::nn::Sequential> train_side_by_side(const char* title,
                                                            const torch::Tensor& x,
                                                            const torch::Tensor& y,
                                                            Reference reference, Fused fused) {
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

  std::printf("\n%s\n%5s %16s %16s\n", title, "epoch", "torch::nn", "fusedloss::nn");
  double worst = 0;
  for (int epoch = 1; epoch <= 30; ++epoch) {
    reference_opt.zero_grad();
    fused_opt.zero_grad();
    auto a = reference(reference_model->forward(x), y);
    auto b = fused(fused_model->forward(x), y);
    a.backward();
    b.backward();
    reference_opt.step();
    fused_opt.step();
    const double va = a.template item<double>(), vb = b.template item<double>();
    worst = std::max(worst, std::abs(va - vb) / std::max(1e-12, std::abs(va)));
    if (epoch % 5 == 0 || epoch == 1) std::printf("%5d %16.6f %16.6f\n", epoch, va, vb);
  }
  std::printf("largest relative difference: %.3g\n", worst);
  return {worst, fused_model};
}

}  // namespace

int main() {
  torch::manual_seed(0);
  std::printf("fusedloss %s\n", fusedloss::version());

  // Regression: y = 2 x0 - 3 x1 + 0.5 x2^2 + noise.
  const auto x = torch::randn({512, 3});
  const auto y = (2 * x.select(1, 0) - 3 * x.select(1, 1) + 0.5 * x.select(1, 2).pow(2) +
                  0.1 * torch::randn({512}))
                     .unsqueeze(1);
  const auto [regression_gap, regressor] = train_side_by_side(
      "regression, MSELoss", x, y, torch::nn::MSELoss(), fusedloss::nn::MSELoss());

  // Imbalanced binary classification (about 10% positives), positives weighted 9x.
  const auto score = x.select(1, 0) + 0.5 * x.select(1, 1) + 0.3 * torch::randn({512});
  const auto labels = (score > 1.3).to(torch::kFloat).unsqueeze(1);
  const auto pos_weight = torch::full({1}, 9.0);
  auto [classification_gap, classifier] = train_side_by_side(
      "imbalanced classification, BCEWithLogitsLoss(pos_weight=9)", x, labels,
      torch::nn::BCEWithLogitsLoss(torch::nn::BCEWithLogitsLossOptions().pos_weight(pos_weight)),
      fusedloss::nn::BCEWithLogitsLoss(
          torch::nn::BCEWithLogitsLossOptions().pos_weight(pos_weight)));
  {
    torch::NoGradGuard no_grad;
    const auto predicted = (classifier->forward(x) > 0).to(torch::kFloat);
    const double positives = labels.sum().item<double>();
    const double found = (predicted * labels).sum().item<double>();
    std::printf("positives: %.0f of %lld; found by the fused model: %.0f (recall %.2f)\n",
                positives, static_cast<long long>(labels.size(0)), found, found / positives);
  }

  if (std::max(regression_gap, classification_gap) > 1e-4) {
    std::printf("FAILED: the runs disagree\n");
    return 1;
  }
  std::printf("the runs agree\n");
  return 0;
}
