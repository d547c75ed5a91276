// A LibTorch trainer with no Python: trains the same small MLP twice on generated data, once with
// a torch::nn loss and once with its fusedloss::nn drop-in, from the same initial weights, and
// prints both losses per epoch — for regression (MSELoss), imbalanced binary classification
// (BCEWithLogitsLoss with pos_weight) and 4-class classification (CrossEntropyLoss with label
// smoothing), and a frame classifier on sequences with CTCLoss — then evaluates the fused models
// with fusedloss::metrics. The runs must agree: the exit status is non-zero if they drift apart.

#include <fusedloss/fusedloss.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace {

torch::nn::Sequential make_model(int64_t outputs) {
  return torch::nn::Sequential(torch::nn::Linear(3, 32), torch::nn::Tanh(),
                               torch::nn::Linear(32, outputs));
}

// Trains two copies of one model, with `reference` and with `fused`; returns the largest relative
// difference between their losses over the epochs, and the fused model.
template <typename Reference, typename Fused>
std::pair<double, torch::nn::Sequential> train_side_by_side(const char* title,
                                                            const torch::Tensor& x,
                                                            const torch::Tensor& y,
                                                            Reference reference, Fused fused,
                                                            int64_t outputs = 1) {
  auto reference_model = make_model(outputs);
  auto fused_model = make_model(outputs);
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

// Sequences of 4-feature frames whose labels (1..4) come in runs, with noise frames (the blank,
// 0) between; a per-frame linear classifier trained with CTC, torch::nn::CTCLoss against
// fusedloss::nn::CTCLoss from the same weights. Returns the largest relative loss difference.
double train_ctc_side_by_side() {
  const int64_t T = 24, N = 16;
  const auto label = torch::randint(1, 5, {N, 6}, torch::kLong);
  auto frames = 0.5 * torch::randn({T, N, 4});
  auto target_lengths = torch::zeros({N}, torch::kLong);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t length = 3 + n % 4;
    target_lengths[n] = length;
    for (int64_t k = 0; k < length; ++k) {  // label k on frames 3k+1 and 3k+2
      frames.index_put_({torch::indexing::Slice(3 * k + 1, 3 * k + 3), n,
                         label[n][k].item<int64_t>() - 1},
                        2.0);
    }
  }
  const auto input_lengths = torch::full({N}, T, torch::kLong);
  auto reference_model = torch::nn::Linear(4, 5);
  auto fused_model = torch::nn::Linear(4, 5);
  {
    torch::NoGradGuard no_grad;
    fused_model->weight.copy_(reference_model->weight);
    fused_model->bias.copy_(reference_model->bias);
  }
  torch::optim::SGD reference_opt(reference_model->parameters(), 0.1);
  torch::optim::SGD fused_opt(fused_model->parameters(), 0.1);
  torch::nn::CTCLoss reference;
  fusedloss::nn::CTCLoss fused;
  std::printf("\nsequences, CTCLoss\n%5s %16s %16s\n", "epoch", "torch::nn", "fusedloss::nn");
  double worst = 0;
  for (int epoch = 1; epoch <= 30; ++epoch) {
    reference_opt.zero_grad();
    fused_opt.zero_grad();
    auto a = reference(reference_model->forward(frames).log_softmax(2), label, input_lengths,
                       target_lengths);
    auto b = fused(fused_model->forward(frames).log_softmax(2), label, input_lengths,
                   target_lengths);
    a.backward();
    b.backward();
    reference_opt.step();
    fused_opt.step();
    const double va = a.item<double>(), vb = b.item<double>();
    worst = std::max(worst, std::abs(va - vb) / std::max(1e-12, std::abs(va)));
    if (epoch % 5 == 0 || epoch == 1) std::printf("%5d %16.6f %16.6f\n", epoch, va, vb);
  }
  std::printf("largest relative difference: %.3g\n", worst);
  return worst;
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
  auto [regression_gap, regressor] = train_side_by_side(
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

  // Four classes from the quadrant of (x0, x1), with label smoothing.
  const auto classes =
      (x.select(1, 0) > 0).to(torch::kLong) * 2 + (x.select(1, 1) > 0).to(torch::kLong);
  const auto smoothing = torch::nn::CrossEntropyLossOptions().label_smoothing(0.1);
  auto [multiclass_gap, multiclass_model] = train_side_by_side(
      "4 classes, CrossEntropyLoss(label_smoothing=0.1)", x, classes,
      torch::nn::CrossEntropyLoss(smoothing), fusedloss::nn::CrossEntropyLoss(smoothing), 4);

  const double ctc_gap = train_ctc_side_by_side();

  {
    torch::NoGradGuard no_grad;
    namespace metrics = fusedloss::metrics;
    std::printf("\nfused models, evaluated with fusedloss::metrics on the training data\n");
    std::printf("regression: r2 %.3f, mse %.4f\n",
                metrics::r2_score(regressor->forward(x).squeeze(1), y.squeeze(1)).item<double>(),
                metrics::mean_squared_error(regressor->forward(x), y).item<double>());
    // One state, every metric: the logits are thresholded after a sigmoid (they are not in [0, 1]).
    metrics::ClassificationMetrics binary("binary");
    binary.update(classifier->forward(x).squeeze(1), labels.squeeze(1).to(torch::kLong));
    std::printf("imbalanced binary: accuracy %.3f, precision %.3f, recall %.3f, f1 %.3f\n",
                binary.compute("accuracy").item<double>(),
                binary.compute("precision").item<double>(), binary.compute("recall").item<double>(),
                binary.compute("f1").item<double>());
    metrics::ClassificationMetrics four("multiclass", 4,
                                        metrics::ClassificationOptions().average("macro"));
    four.update(multiclass_model->forward(x), classes);
    std::printf("4 classes: accuracy %.3f, macro f1 %.3f\n",
                four.compute("accuracy").item<double>(), four.compute("f1").item<double>());
  }

  if (std::max({regression_gap, classification_gap, multiclass_gap, ctc_gap}) > 1e-4) {
    std::printf("FAILED: the runs disagree\n");
    return 1;
  }
  std::printf("the runs agree\n");
  return 0;
}
