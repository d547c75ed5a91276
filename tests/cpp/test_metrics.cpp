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

// Binned threshold metrics with a threshold at every distinct score reproduce the exact ones, whose
// formulas are independent of the histogram: AUROC is the Mann-Whitney statistic (the share of
// positive-negative pairs ranked right, ties counting half), and average precision is the mean
// over the positives of the precision at each positive's rank (distinct scores).
TEST(ThresholdMetrics, BinnedAtEveryScoreEqualsTheExactFormulas) {
  torch::manual_seed(3);
  const auto scores = torch::randperm(200, torch::kDouble) / 200.0;  // distinct, in [0, 1)
  const auto labels = (torch::rand({200}, torch::kDouble) < scores).to(torch::kLong);
  fusedloss::metrics::ThresholdMetrics binned("binary", std::get<0>(torch::sort(scores)));
  binned.update(scores.slice(0, 0, 120), labels.slice(0, 0, 120));
  fusedloss::metrics::ThresholdMetrics rest("binary", std::get<0>(torch::sort(scores)));
  rest.update(scores.slice(0, 120), labels.slice(0, 120));
  binned.merge(rest);

  const auto positive = labels.eq(1), negative = labels.eq(0);
  const auto pos = scores.masked_select(positive).unsqueeze(1);
  const auto neg = scores.masked_select(negative).unsqueeze(0);
  const double pairs = static_cast<double>(pos.size(0) * neg.size(1));
  const double mann_whitney =
      (pos.gt(neg).sum().item<double>() + 0.5 * pos.eq(neg).sum().item<double>()) / pairs;
  EXPECT_NEAR(binned.auroc().item<double>(), mann_whitney, 1e-12);

  const auto order = std::get<1>(torch::sort(scores, 0, /*descending=*/true));
  const auto sorted = labels.index_select(0, order).to(torch::kDouble);
  const auto rank = torch::arange(1, 201, torch::kDouble);
  const auto precision_at = sorted.cumsum(0) / rank;
  const double exact_ap = (precision_at * sorted).sum().item<double>() / sorted.sum().item<double>();
  EXPECT_NEAR(binned.average_precision().item<double>(), exact_ap, 1e-12);

  // Multiclass one-vs-rest: each class is its own binary problem.
  const auto logits = torch::randn({300, 3}, torch::kDouble);
  const auto classes = torch::randint(3, {300}, torch::kLong);
  fusedloss::metrics::ThresholdMetrics multiclass(
      "multiclass", 50, fusedloss::metrics::ThresholdOptions().num_classes(3));
  multiclass.update(logits, classes);
  const auto per_class = multiclass.auroc("none");
  const auto probabilities = torch::softmax(logits, 1);
  for (int64_t c = 0; c < 3; ++c) {
    fusedloss::metrics::ThresholdMetrics one("binary", 50);
    one.update(probabilities.select(1, c), classes.eq(c).to(torch::kLong));
    EXPECT_NEAR(per_class[c].item<double>(), one.auroc().item<double>(), 1e-12) << "class " << c;
  }
  EXPECT_NEAR(multiclass.auroc("macro").item<double>(), per_class.mean().item<double>(), 1e-12);
  EXPECT_THROW(fusedloss::metrics::ThresholdMetrics("binary", torch::tensor({0.5, 0.2})),
               c10::ValueError);
}

// Calibration error from its definition: per bin of width 1/n, |mean accuracy - mean confidence|,
// weighed by the bin's share of the samples (ECE), or its largest value (MCE).
TEST(ThresholdMetrics, CalibrationErrorMatchesItsDefinition) {
  torch::manual_seed(4);
  const auto confidence = torch::rand({500}, torch::kDouble) * 0.999;  // none on a bin edge of 1
  const auto labels = (torch::rand({500}, torch::kDouble) < confidence.pow(2)).to(torch::kLong);
  for (const std::string norm : {"l1", "max"}) {
    fusedloss::metrics::CalibrationError metric("binary", 10, norm);
    metric.update(confidence.slice(0, 0, 200), labels.slice(0, 0, 200));
    fusedloss::metrics::CalibrationError rest("binary", 10, norm);
    rest.update(confidence.slice(0, 200), labels.slice(0, 200));
    metric.merge(rest);
    double weighted = 0, largest = 0;
    for (int b = 0; b < 10; ++b) {
      const auto in_bin = confidence.ge(b / 10.0).logical_and(confidence.lt((b + 1) / 10.0));
      const double n = in_bin.sum().item<double>();
      if (n == 0) continue;
      const double gap = std::abs(labels.masked_select(in_bin).to(torch::kDouble).mean().item<double>() -
                                  confidence.masked_select(in_bin).mean().item<double>());
      weighted += gap * n / 500.0;
      largest = std::max(largest, gap);
    }
    EXPECT_NEAR(metric.compute().item<double>(), norm == "l1" ? weighted : largest, 1e-9) << norm;
  }
  EXPECT_THROW(fusedloss::metrics::CalibrationError("binary", 10, "l3"), c10::ValueError);
}

// Targets that are not labels are counted in update (no read-back) and refused by compute, as in
// Python; ignore_index is not counted.
TEST(ThresholdMetrics, CalibrationErrorRefusesTargetsThatAreNotLabels) {
  fusedloss::metrics::CalibrationError binary("binary", 10, "l1", /*ignore_index=*/-1);
  binary.update(torch::tensor({0.2, 0.9, 0.4}), torch::tensor({0, 1, -1}));
  EXPECT_TRUE(std::isfinite(binary.compute().item<double>()));
  binary.update(torch::tensor({0.2, 0.9}), torch::tensor({2, 1}));
  EXPECT_THROW(binary.compute(), c10::ValueError);
  fusedloss::metrics::CalibrationError multiclass("multiclass", 10, "l1", std::nullopt, 3);
  multiclass.update(torch::rand({4, 3}), torch::tensor({0, 2, 3, 1}));
  EXPECT_THROW(multiclass.compute(), c10::ValueError);
  EXPECT_THROW(multiclass.update(torch::rand({4, 5}), torch::tensor({0, 2, 1, 1})), c10::ValueError);
}

// Multilabel from per-label binary counts: 'macro' is the mean of each label's binary score,
// 'micro' accuracy the share of right (sample, label) decisions.
TEST(Metrics, MultilabelIsPerLabelBinary) {
  torch::manual_seed(5);
  const auto scores = torch::rand({300, 4}, torch::kDouble);
  const auto labels = (torch::rand({300, 4}, torch::kDouble) < scores).to(torch::kLong);
  namespace M = fusedloss::metrics;
  for (const std::string metric : {"precision", "recall", "f1"}) {
    double sum = 0;
    for (int64_t l = 0; l < 4; ++l) {
      sum += M::classification(metric, scores.select(1, l), labels.select(1, l), "binary")
                 .item<double>();
    }
    const auto macro = M::classification(metric, scores, labels, "multilabel", 4,
                                         M::ClassificationOptions().average("macro"));
    EXPECT_NEAR(macro.item<double>(), sum / 4, 1e-6) << metric;  // the binary op divides in float32
  }
  const double right = (scores.gt(0.5).to(torch::kLong) == labels).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(M::accuracy(scores, labels, "multilabel", 4).item<double>(), right, 1e-12);
  EXPECT_EQ(M::confusion_matrix(scores, labels, "multilabel", 4).sizes(), (std::vector<int64_t>{4, 2, 2}));
}
