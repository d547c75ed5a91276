// The metrics through the C++ API: one-batch functions against the counts written out with
// LibTorch ops, streaming equals one batch, merge, and a bad label.

#include <fusedloss/fusedloss.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace {

TEST(Metrics, ClassificationFromOneState) {
  torch::manual_seed(0);
  const auto scores = torch::randn({500, 4});
  const auto target = torch::randint(0, 4, {500});
  const auto predicted = scores.argmax(1);
  const double accuracy = predicted.eq(target).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(fusedloss::metrics::accuracy(scores, target, "multiclass", 4).item<double>(),
              accuracy, 1e-6);
  // Macro recall: the mean over classes of the share of each class found.
  double recall = 0;
  for (int64_t c = 0; c < 4; ++c) {
    const auto is_c = target.eq(c);
    recall += predicted.eq(c).logical_and(is_c).sum().item<double>() / is_c.sum().item<double>();
  }
  fusedloss::metrics::ClassificationMetrics streamed(
      "multiclass", 4, fusedloss::metrics::ClassificationOptions().average("macro"));
  for (int64_t start = 0; start < 500; start += 64) {
    const int64_t len = std::min<int64_t>(64, 500 - start);
    streamed.update(scores.narrow(0, start, len), target.narrow(0, start, len));
  }
  EXPECT_NEAR(streamed.compute("recall").item<double>(), recall / 4, 1e-6);
  const auto confusion = streamed.compute("confusion_matrix");
  EXPECT_EQ(confusion.sum().item<int64_t>(), 500);
  EXPECT_EQ(confusion.diagonal().sum().item<int64_t>(), predicted.eq(target).sum().item<int64_t>());

  fusedloss::metrics::ClassificationMetrics a("multiclass", 4), b("multiclass", 4);
  a.update(scores.narrow(0, 0, 200), target.narrow(0, 0, 200));
  b.update(scores.narrow(0, 200, 300), target.narrow(0, 200, 300));
  EXPECT_NEAR(a.merge(b).compute("accuracy").item<double>(), accuracy, 1e-6);
}

TEST(Metrics, RegressionAndBadLabels) {
  torch::manual_seed(1);
  const auto target = torch::randn({1000}) * 2 + 5;
  const auto preds = target + torch::randn({1000}) * 0.5;
  const auto err = preds - target;
  EXPECT_NEAR(fusedloss::metrics::mean_squared_error(preds, target).item<double>(),
              err.pow(2).mean().item<double>(), 1e-5);
  EXPECT_NEAR(fusedloss::metrics::mean_absolute_error(preds, target).item<double>(),
              err.abs().mean().item<double>(), 1e-5);
  const double r2 =
      1 - err.pow(2).sum().item<double>() / (target - target.mean()).pow(2).sum().item<double>();
  EXPECT_NEAR(fusedloss::metrics::r2_score(preds, target).item<double>(), r2, 1e-5);
  EXPECT_THROW(
      fusedloss::metrics::accuracy(torch::tensor({0, 1}), torch::tensor({0, 5}), "multiclass", 3),
      c10::ValueError);
}

}  // namespace
