// The pointwise losses through the C++ API (functional and modules) and through the dispatcher,
// against LibTorch's own losses: values and gradients, on the CPU and, when one is present, CUDA.

#include <fusedloss/fusedloss.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace {

namespace F = torch::nn::functional;

struct LossCase {
  std::string name;
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                              torch::nn::MSELossOptions::reduction_t)>
      ours;
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                              torch::nn::MSELossOptions::reduction_t)>
      torch_ref;
};

// A reduction of the losses' common options as kl_div's (which adds kBatchMean).
torch::nn::KLDivLossOptions::reduction_t as_kl_reduction(torch::nn::MSELossOptions::reduction_t r) {
  return std::visit([](auto v) -> torch::nn::KLDivLossOptions::reduction_t { return v; }, r);
}

std::vector<LossCase> loss_cases() {
  return {
      {"mse_loss",
       [](auto& x, auto& y, auto r) {
         return fusedloss::functional::mse_loss(x, y, torch::nn::MSELossOptions().reduction(r));
       },
       [](auto& x, auto& y, auto r) {
         return F::mse_loss(x, y, F::MSELossFuncOptions().reduction(r));
       }},
      {"l1_loss",
       [](auto& x, auto& y, auto r) {
         return fusedloss::functional::l1_loss(x, y, torch::nn::L1LossOptions().reduction(r));
       },
       [](auto& x, auto& y, auto r) {
         return F::l1_loss(x, y, F::L1LossFuncOptions().reduction(r));
       }},
      {"huber_loss",
       [](auto& x, auto& y, auto r) {
         return fusedloss::functional::huber_loss(
             x, y, torch::nn::HuberLossOptions().reduction(r).delta(0.7));
       },
       [](auto& x, auto& y, auto r) {
         return F::huber_loss(x, y, F::HuberLossFuncOptions().reduction(r).delta(0.7));
       }},
      {"smooth_l1_loss",
       [](auto& x, auto& y, auto r) {
         return fusedloss::functional::smooth_l1_loss(
             x, y, torch::nn::SmoothL1LossOptions().reduction(r).beta(0.5));
       },
       [](auto& x, auto& y, auto r) {
         return F::smooth_l1_loss(x, y, F::SmoothL1LossFuncOptions().reduction(r), 0.5);
       }},
      {"poisson_nll_loss",
       [](auto& x, auto& y, auto r) {
         return fusedloss::nn::PoissonNLLLoss(torch::nn::PoissonNLLLossOptions().reduction(r))(x,
                                                                                               y);
       },
       [](auto& x, auto& y, auto r) {
         return F::poisson_nll_loss(x, y, F::PoissonNLLLossFuncOptions().reduction(r));
       }},
      {"kl_div",  // log-probability targets: any real y is one
       [](auto& x, auto& y, auto r) {
         return fusedloss::functional::kl_div(
             x, y, torch::nn::KLDivLossOptions().reduction(as_kl_reduction(r)).log_target(true));
       },
       [](auto& x, auto& y, auto r) {
         return F::kl_div(x, y,
                          F::KLDivFuncOptions().reduction(as_kl_reduction(r)).log_target(true));
       }},
      {"kl_div_batchmean",
       [](auto& x, auto& y, auto) {
         return fusedloss::nn::KLDivLoss(
             torch::nn::KLDivLossOptions().reduction(torch::kBatchMean).log_target(true))(x, y);
       },
       [](auto& x, auto& y, auto) {
         return F::kl_div(x, y,
                          F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
       }},
  };
}

std::vector<torch::Device> devices() {
  std::vector<torch::Device> out{torch::kCPU};
  if (torch::cuda::is_available()) out.emplace_back(torch::kCUDA);
  return out;
}

std::vector<torch::nn::MSELossOptions::reduction_t> reductions() {
  return {torch::kNone, torch::kMean, torch::kSum};
}

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected,
                  const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << what;
  EXPECT_TRUE(torch::allclose(actual, expected, /*rtol=*/1e-5, /*atol=*/1e-6))
      << what << "\nactual:\n"
      << actual << "\nexpected:\n"
      << expected;
}

TEST(PointwiseLosses, ValuesAndGradientsMatchLibTorch) {
  for (const auto& device : devices()) {
    for (const auto& c : loss_cases()) {
      for (const auto& reduction : reductions()) {
        torch::manual_seed(0);
        const auto options = torch::TensorOptions().dtype(torch::kFloat).device(device);
        // Values on both sides of every kink (|d| around 0.5, 0.7 and 1).
        auto x = (torch::randn({37, 11}, options) * 2).requires_grad_();
        auto y = torch::randn({37, 11}, options).requires_grad_();
        auto x_ref = x.detach().clone().requires_grad_();
        auto y_ref = y.detach().clone().requires_grad_();

        auto loss = c.ours(x, y, reduction);
        auto loss_ref = c.torch_ref(x_ref, y_ref, reduction);
        const std::string what = c.name + " on " + device.str();
        expect_close(loss, loss_ref, what + " value");

        auto grad_out = torch::rand_like(loss_ref) + 0.5;
        loss.backward(grad_out);
        loss_ref.backward(grad_out);
        expect_close(x.grad(), x_ref.grad(), what + " grad input");
        expect_close(y.grad(), y_ref.grad(), what + " grad target");
      }
    }
  }
}

TEST(PointwiseLosses, ModulesMatchFunctional) {
  torch::manual_seed(1);
  auto x = torch::randn({64});
  auto y = torch::randn({64});
  fusedloss::nn::MSELoss mse;
  fusedloss::nn::L1Loss l1(torch::nn::L1LossOptions(torch::kSum));
  fusedloss::nn::HuberLoss huber(torch::nn::HuberLossOptions().delta(0.3));
  fusedloss::nn::SmoothL1Loss smooth(torch::nn::SmoothL1LossOptions().beta(2.0));
  expect_close(mse(x, y), torch::mse_loss(x, y), "MSELoss");
  expect_close(l1(x, y), F::l1_loss(x, y, F::L1LossFuncOptions(torch::kSum)), "L1Loss");
  expect_close(huber(x, y), F::huber_loss(x, y, F::HuberLossFuncOptions().delta(0.3)), "HuberLoss");
  expect_close(smooth(x, y), F::smooth_l1_loss(x, y, F::SmoothL1LossFuncOptions(), 2.0),
               "SmoothL1Loss");
  // Modules are real torch::nn modules: they print and clone.
  std::ostringstream printed;
  printed << *mse;
  EXPECT_EQ(printed.str(), "fusedloss::nn::MSELoss()");
  EXPECT_NE(huber->clone().get(), nullptr);
}

TEST(PointwiseLosses, DispatcherCallEqualsCppApi) {
  auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedloss::huber_loss", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view, double)>();
  auto x = torch::randn({5, 3});
  auto y = torch::randn({5, 3});
  expect_close(op.call(x, y, "sum", 0.25),
               fusedloss::functional::huber_loss(
                   x, y, torch::nn::HuberLossOptions().reduction(torch::kSum).delta(0.25)),
               "dispatcher huber_loss");
}

TEST(PointwiseLosses, BroadcastingAndDoublePrecision) {
  auto x = torch::randn({4, 1, 3}, torch::kDouble).requires_grad_();
  auto y = torch::randn({5, 1}, torch::kDouble).requires_grad_();
  auto x_ref = x.detach().clone().requires_grad_();
  auto y_ref = y.detach().clone().requires_grad_();
  auto loss = fusedloss::functional::mse_loss(x, y, torch::nn::MSELossOptions(torch::kSum));
  auto [bx, by] = std::make_tuple(torch::broadcast_tensors({x_ref, y_ref})[0],
                                  torch::broadcast_tensors({x_ref, y_ref})[1]);
  auto loss_ref = torch::mse_loss(bx, by, at::Reduction::Sum);
  expect_close(loss, loss_ref, "broadcast mse value");
  loss.backward();
  loss_ref.backward();
  expect_close(x.grad(), x_ref.grad(), "broadcast grad input");
  expect_close(y.grad(), y_ref.grad(), "broadcast grad target");
}

TEST(PointwiseLosses, BadInputRaisesClearError) {
  auto x = torch::randn({3, 2});
  try {
    fusedloss::functional::mse_loss(x, torch::randn({4}));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not broadcastable"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fusedloss::functional::huber_loss(x, x, torch::nn::HuberLossOptions().delta(0.0)),
               c10::Error);
  EXPECT_THROW(fusedloss::functional::mse_loss(x.to(torch::kLong), x.to(torch::kLong)),
               c10::NotImplementedError);
}

TEST(BinaryLosses, ValuesAndGradientsMatchLibTorch) {
  for (const auto& device : devices()) {
    torch::manual_seed(2);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    const auto logits = torch::randn({16, 5}, options) * 3;
    const auto probabilities = torch::sigmoid(logits);
    const auto soft = torch::rand({16, 5}, options);
    const auto signs = torch::randint(0, 2, {16, 5}, options) * 2 - 1;
    const auto pos_weight = torch::rand({5}, options) + 0.5;
    const auto weight = torch::rand({16, 1}, options);
    using Fn = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;
    struct Case {
      std::string name;
      torch::Tensor input, target;
      Fn ours, reference;
    };
    const std::vector<Case> cases = {
        {"binary_cross_entropy", probabilities, soft,
         [&](auto& x, auto& y) {
           return fusedloss::functional::binary_cross_entropy(
               x, y, torch::nn::BCELossOptions().weight(weight));
         },
         [&](auto& x, auto& y) {
           return F::binary_cross_entropy(x, y, F::BinaryCrossEntropyFuncOptions().weight(weight));
         }},
        {"binary_cross_entropy_with_logits", logits, soft,
         [&](auto& x, auto& y) {
           return fusedloss::functional::binary_cross_entropy_with_logits(
               x, y,
               torch::nn::BCEWithLogitsLossOptions().pos_weight(pos_weight).reduction(torch::kSum));
         },
         [&](auto& x, auto& y) {
           return F::binary_cross_entropy_with_logits(x, y,
                                                      F::BinaryCrossEntropyWithLogitsFuncOptions()
                                                          .pos_weight(pos_weight)
                                                          .reduction(torch::kSum));
         }},
        {"soft_margin_loss", logits, signs,
         [&](auto& x, auto& y) { return fusedloss::functional::soft_margin_loss(x, y); },
         [&](auto& x, auto& y) { return F::soft_margin_loss(x, y); }},
        {"hinge_embedding_loss", logits, signs,
         [&](auto& x, auto& y) {
           return fusedloss::functional::hinge_embedding_loss(
               x, y, torch::nn::HingeEmbeddingLossOptions().margin(0.5).reduction(torch::kNone));
         },
         [&](auto& x, auto& y) {
           return F::hinge_embedding_loss(
               x, y, F::HingeEmbeddingLossFuncOptions().margin(0.5).reduction(torch::kNone));
         }},
        {"hinge_loss (formula)", logits, signs,
         [&](auto& x, auto& y) {
           return fusedloss::functional::hinge_loss(
               x, y, fusedloss::functional::HingeLossOptions().margin(0.5).squared(true));
         },
         [&](auto& x, auto& y) { return (0.5 - y * x).clamp_min(0).pow(2).mean(); }},
        {"sigmoid_focal_loss (torchvision formula)", logits, soft,
         [&](auto& x, auto& y) {
           return fusedloss::functional::sigmoid_focal_loss(
               x, y, fusedloss::functional::SigmoidFocalLossOptions().reduction(torch::kSum));
         },
         [&](auto& x, auto& y) {
           auto p = torch::sigmoid(x);
           auto ce = F::binary_cross_entropy_with_logits(
               x, y, F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone));
           auto p_t = p * y + (1 - p) * (1 - y);
           return ((0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t).pow(2)).sum();
         }},
    };
    for (const auto& c : cases) {
      // Target gradients where torch (or the formula's autograd) has them.
      const bool target_grad = c.name.find("embedding") == std::string::npos &&
                               c.name.find("soft_margin") == std::string::npos;
      auto x = c.input.clone().requires_grad_();
      auto x_ref = c.input.clone().requires_grad_();
      auto t = c.target.clone().requires_grad_(target_grad);
      auto t_ref = c.target.clone().requires_grad_(target_grad);
      auto loss = c.ours(x, t);
      auto loss_ref = c.reference(x_ref, t_ref);
      const std::string what = c.name + " on " + device.str();
      expect_close(loss, loss_ref, what + " value");
      auto grad_out = torch::rand_like(loss_ref) + 0.5;
      loss.backward(grad_out);
      loss_ref.backward(grad_out);
      expect_close(x.grad(), x_ref.grad(), what + " grad input");
      if (target_grad) expect_close(t.grad(), t_ref.grad(), what + " grad target");
    }
  }
}

TEST(BinaryLosses, ModulesAndBadInput) {
  auto x = torch::rand({8, 3});
  auto y = torch::rand({8, 3});
  fusedloss::nn::BCELoss bce;
  fusedloss::nn::BCEWithLogitsLoss bce_logits(
      torch::nn::BCEWithLogitsLossOptions().pos_weight(torch::ones({3}) * 2));
  fusedloss::nn::SigmoidFocalLoss focal(
      fusedloss::functional::SigmoidFocalLossOptions().gamma(0).alpha(-1).reduction(torch::kMean));
  expect_close(bce(x, y), F::binary_cross_entropy(x, y), "BCELoss");
  expect_close(
      bce_logits(x, y),
      F::binary_cross_entropy_with_logits(
          x, y, F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(torch::ones({3}) * 2)),
      "BCEWithLogitsLoss");
  expect_close(focal(x, y), F::binary_cross_entropy_with_logits(x, y),
               "focal with gamma 0 is BCE-with-logits");
  EXPECT_THROW(bce(x + 1, y), c10::Error);  // probabilities above 1
  fusedloss::nn::HingeLoss hinge;
  EXPECT_THROW(hinge(x, y), c10::ValueError);  // labels other than -1 and 1
}

TEST(PointwiseLosses, Cuda) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device on this machine; CUDA is covered by "
                    "ValuesAndGradientsMatchLibTorch where one is present";
  auto x = torch::randn({1 << 20}, torch::kCUDA);
  auto y = torch::randn({1 << 20}, torch::kCUDA);
  expect_close(fusedloss::functional::mse_loss(x, y), torch::mse_loss(x, y), "cuda mse 1M");
  // A misaligned view takes the scalar (non-vector) path.
  expect_close(fusedloss::functional::l1_loss(x.narrow(0, 1, 1000), y.narrow(0, 3, 1000)),
               F::l1_loss(x.narrow(0, 1, 1000), y.narrow(0, 3, 1000)), "cuda l1 misaligned");
}

}  // namespace

TEST(PointwiseLosses, MarginRankingAndMultilabelSoftMarginMatchLibTorch) {
  for (const auto& device : devices()) {
    torch::manual_seed(2);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto x1 = torch::randn({9, 5}, options).requires_grad_();
    auto x2 = torch::randn({9, 5}, options).requires_grad_();
    const auto labels = torch::randint(0, 2, {9, 5}, options) * 2 - 1;
    auto x1_ref = x1.detach().clone().requires_grad_();
    auto x2_ref = x2.detach().clone().requires_grad_();
    fusedloss::nn::MarginRankingLoss ranking(torch::nn::MarginRankingLossOptions().margin(0.25));
    auto loss = ranking(x1, x2, labels);
    auto loss_ref = F::margin_ranking_loss(x1_ref, x2_ref, labels,
                                           F::MarginRankingLossFuncOptions().margin(0.25));
    const std::string on = " on " + device.str();
    expect_close(loss, loss_ref, "margin_ranking_loss" + on);
    loss.backward();
    loss_ref.backward();
    expect_close(x1.grad(), x1_ref.grad(), "margin_ranking_loss grad input1" + on);
    expect_close(x2.grad(), x2_ref.grad(), "margin_ranking_loss grad input2" + on);

    auto x = torch::randn({9, 5}, options).requires_grad_();
    auto x_ref = x.detach().clone().requires_grad_();
    const auto targets = torch::randint(0, 2, {9, 5}, options);
    const auto multilabel_options = torch::nn::MultiLabelSoftMarginLossOptions()
                                        .weight(torch::rand({5}, options))
                                        .reduction(torch::kNone);
    auto per_sample =
        fusedloss::functional::multilabel_soft_margin_loss(x, targets, multilabel_options);
    auto per_sample_ref = F::multilabel_soft_margin_loss(x_ref, targets, multilabel_options);
    expect_close(per_sample, per_sample_ref, "multilabel_soft_margin_loss" + on);
    per_sample.sum().backward();
    per_sample_ref.sum().backward();
    expect_close(x.grad(), x_ref.grad(), "multilabel_soft_margin_loss grad" + on);
    fusedloss::nn::MultiLabelSoftMarginLoss module;
    expect_close(module(x, targets), torch::nn::MultiLabelSoftMarginLoss()(x, targets),
                 "MultiLabelSoftMarginLoss" + on);
  }
}

TEST(PointwiseLosses, GaussianNllMatchesItsFormula) {
  for (const auto& device : devices()) {
    torch::manual_seed(3);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    std::vector<torch::Tensor> ours{torch::randn({7, 3}, options), torch::randn({7, 3}, options),
                                    torch::rand({7}, options) + 0.2};  // one var per sample
    std::vector<torch::Tensor> ref;
    for (auto& t : ours) {
      t.requires_grad_();
      ref.push_back(t.detach().clone().requires_grad_());
    }
    fusedloss::nn::GaussianNLLLoss module(
        fusedloss::functional::GaussianNLLLossOptions().full(true));
    auto loss = module(ours[0], ours[1], ours[2]);
    const auto var = ref[2].unsqueeze(-1);
    auto loss_ref =
        (0.5 * (var.log() + (ref[0] - ref[1]).pow(2) / var) + 0.5 * std::log(2 * M_PI)).mean();
    const std::string on = " on " + device.str();
    expect_close(loss, loss_ref, "gaussian_nll_loss" + on);
    loss.backward();
    loss_ref.backward();
    for (size_t i = 0; i < 3; ++i) {
      expect_close(ours[i].grad(), ref[i].grad(),
                   "gaussian_nll_loss grad " + std::to_string(i) + on);
    }
  }
}
