// The multi-class and sequence losses through the C++ API (functional and modules) against LibTorch's own:
// values and gradients on the CPU and, when one is present, CUDA; the extras; bad targets.

#include <fusedloss/fusedloss.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace {

namespace F = torch::nn::functional;

std::vector<torch::Device> devices() {
  std::vector<torch::Device> out{torch::kCPU};
  if (torch::cuda::is_available()) out.emplace_back(torch::kCUDA);
  return out;
}

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected,
                  const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  EXPECT_TRUE(torch::allclose(actual, expected, 1e-9, 1e-11)) << what << "\nactual:\n"
                                                              << actual << "\nexpected:\n"
                                                              << expected;
}

TEST(MulticlassLosses, ValuesAndGradientsMatchLibTorch) {
  for (const auto& device : devices()) {
    torch::manual_seed(0);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    const auto logits = torch::randn({9, 6}, options) * 3;
    auto target = torch::randint(0, 6, {9}, options.dtype(torch::kLong));
    target[4] = -100;
    const auto weight = torch::rand({6}, options) + 0.2;
    for (const auto& reduction : std::vector<torch::nn::CrossEntropyLossOptions::reduction_t>{
             torch::kNone, torch::kMean, torch::kSum}) {
      auto x = logits.clone().requires_grad_();
      auto x_ref = logits.clone().requires_grad_();
      const auto ce_options =
          torch::nn::CrossEntropyLossOptions().weight(weight).label_smoothing(0.15).reduction(
              reduction);
      auto loss = fusedloss::functional::cross_entropy(x, target, ce_options);
      auto loss_ref = F::cross_entropy(x_ref, target, ce_options);
      const std::string what = "cross_entropy on " + device.str();
      expect_close(loss, loss_ref, what);
      loss.sum().backward();
      loss_ref.sum().backward();
      expect_close(x.grad(), x_ref.grad(), what + " grad");

      auto log_p = torch::log_softmax(logits, 1).detach().requires_grad_();
      auto log_p_ref = log_p.detach().clone().requires_grad_();
      const auto nll_options = torch::nn::NLLLossOptions().weight(weight).reduction(reduction);
      auto nll = fusedloss::functional::nll_loss(log_p, target, nll_options);
      auto nll_ref = F::nll_loss(log_p_ref, target, nll_options);
      expect_close(nll, nll_ref, "nll_loss on " + device.str());
      nll.sum().backward();  // its own backward kernel, no autograd of ATen ops
      nll_ref.sum().backward();
      expect_close(log_p.grad(), log_p_ref.grad(), "nll_loss grad on " + device.str());

      const auto safe = target.clamp_min(0);
      const auto mm_options =
          torch::nn::MultiMarginLossOptions().p(2).margin(0.6).weight(weight).reduction(reduction);
      expect_close(fusedloss::functional::multi_margin_loss(logits, safe, mm_options),
                   F::multi_margin_loss(logits, safe, mm_options),
                   "multi_margin_loss on " + device.str());
    }
  }
}

TEST(MulticlassLosses, ModulesAndExtras) {
  torch::manual_seed(1);
  const auto x = torch::randn({5, 7}, torch::kDouble);
  const auto target = torch::tensor({0, 6, 3, 3, 1});
  fusedloss::nn::CrossEntropyLoss plain;
  expect_close(plain(x, target), torch::nn::CrossEntropyLoss()(x, target), "CrossEntropyLoss");
  fusedloss::nn::NLLLoss nll;
  expect_close(nll(torch::log_softmax(x, 1), target),
               torch::nn::NLLLoss()(torch::log_softmax(x, 1), target), "NLLLoss");
  fusedloss::nn::MultiMarginLoss margin(torch::nn::MultiMarginLossOptions().margin(0.5));
  expect_close(
      margin(x, target),
      torch::nn::MultiMarginLoss(torch::nn::MultiMarginLossOptions().margin(0.5))(x, target),
      "MultiMarginLoss");

  // z_loss and softcap: the same formula in plain LibTorch ops.
  const double z = 0.02, cap = 3.0;
  fusedloss::nn::CrossEntropyLoss extras(
      torch::nn::CrossEntropyLossOptions(),
      fusedloss::functional::CrossEntropyExtras().z_loss(z).softcap(cap));
  const auto capped = cap * torch::tanh(x / cap);
  const auto lse = torch::logsumexp(capped, 1);
  expect_close(extras(x, target), F::cross_entropy(capped, target) + z * (lse * lse).mean(),
               "z_loss + softcap");
  auto [loss, z_part] = fusedloss::functional::cross_entropy_with_z_loss(
      x, target, {}, fusedloss::functional::CrossEntropyExtras().z_loss(z));
  expect_close(z_part, z * (torch::logsumexp(x, 1).pow(2)).mean(), "z_loss part");
  std::ostringstream printed;
  printed << *extras;
  EXPECT_EQ(printed.str(), "fusedloss::nn::CrossEntropyLoss()");
}

TEST(MulticlassLosses, OutOfRangeTargetIsIndexError) {
  const auto x = torch::randn({3, 4});
  try {
    fusedloss::functional::cross_entropy(x, torch::tensor({0, 9, 1}));
    FAIL() << "expected an IndexError";
  } catch (const c10::IndexError& e) {
    EXPECT_NE(std::string(e.what()).find("target 9 is out of bounds"), std::string::npos)
        << e.what();
  }
  const auto unchecked = fusedloss::functional::cross_entropy(
      x, torch::tensor({0, 9, 1}), torch::nn::CrossEntropyLossOptions().reduction(torch::kNone),
      fusedloss::functional::CrossEntropyExtras().check_target(false));
  EXPECT_TRUE(std::isnan(unchecked[1].item<float>()));
  EXPECT_FALSE(std::isnan(unchecked[0].item<float>()));
}

TEST(MulticlassLosses, LinearCrossEntropyMatchesLinearThenCrossEntropy) {
  for (const auto& device : devices()) {
    torch::manual_seed(3);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto x = torch::randn({3, 5, 8}, options).requires_grad_();
    auto target = torch::randint(0, 11, {3, 5}, options.dtype(torch::kLong));
    target[1][2] = -100;
    fusedloss::nn::LinearCrossEntropyLoss head(
        fusedloss::nn::LinearCrossEntropyLossOptions(8, 11).bias(true).loss(
            fusedloss::functional::LinearCrossEntropyFuncOptions().label_smoothing(0.1).chunk_size(
                4)));
    head->to(device, torch::kDouble);
    auto loss = head(x, target);
    auto x_ref = x.detach().clone().requires_grad_();
    auto w_ref = head->linear->weight.detach().clone().requires_grad_();
    auto b_ref = head->linear->bias.detach().clone().requires_grad_();
    auto loss_ref = F::cross_entropy(F::linear(x_ref, w_ref, b_ref).view({15, 11}), target.view(-1),
                                     F::CrossEntropyFuncOptions().label_smoothing(0.1));
    const std::string what = "linear_cross_entropy on " + device.str();
    expect_close(loss, loss_ref, what);
    loss.backward();
    loss_ref.backward();
    expect_close(x.grad(), x_ref.grad(), what + " grad input");
    expect_close(head->linear->weight.grad(), w_ref.grad(), what + " grad weight");
    expect_close(head->linear->bias.grad(), b_ref.grad(), what + " grad bias");
  }
}

}  // namespace

TEST(MulticlassLosses, CosineEmbeddingMatchesLibTorch) {
  for (const auto& device : devices()) {
    torch::manual_seed(4);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto x1 = torch::randn({7, 9}, options).requires_grad_();
    auto x2 = torch::randn({7, 9}, options).requires_grad_();
    const auto labels = torch::randint(0, 2, {7}, options) * 2 - 1;
    auto x1_ref = x1.detach().clone().requires_grad_();
    auto x2_ref = x2.detach().clone().requires_grad_();
    fusedloss::nn::CosineEmbeddingLoss module(
        torch::nn::CosineEmbeddingLossOptions().margin(0.1).reduction(torch::kSum));
    auto loss = module(x1, x2, labels);
    auto loss_ref = torch::nn::functional::cosine_embedding_loss(
        x1_ref, x2_ref, labels,
        torch::nn::functional::CosineEmbeddingLossFuncOptions().margin(0.1).reduction(torch::kSum));
    const std::string on = " on " + device.str();
    expect_close(loss, loss_ref, "cosine_embedding_loss" + on);
    loss.backward();
    loss_ref.backward();
    expect_close(x1.grad(), x1_ref.grad(), "cosine_embedding_loss grad input1" + on);
    expect_close(x2.grad(), x2_ref.grad(), "cosine_embedding_loss grad input2" + on);
  }
}

TEST(MulticlassLosses, TripletMarginMatchesLibTorch) {
  for (const auto& device : devices()) {
    torch::manual_seed(5);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    std::vector<torch::Tensor> ours, reference;
    for (int i = 0; i < 3; ++i) {
      ours.push_back(torch::randn({6, 8}, options).requires_grad_());
      reference.push_back(ours.back().detach().clone().requires_grad_());
    }
    const auto options_of = [](double p) {
      return torch::nn::TripletMarginLossOptions().margin(1.5).p(p).swap(true).reduction(
          torch::kMean);
    };
    for (const double p : {2.0, 1.0, 3.0}) {
      for (auto& t : ours) t.mutable_grad() = torch::Tensor();
      for (auto& t : reference) t.mutable_grad() = torch::Tensor();
      fusedloss::nn::TripletMarginLoss module(options_of(p));
      auto loss = module(ours[0], ours[1], ours[2]);
      auto loss_ref =
          F::triplet_margin_loss(reference[0], reference[1], reference[2], options_of(p));
      const std::string on = " p=" + std::to_string(p) + " on " + device.str();
      expect_close(loss, loss_ref, "triplet_margin_loss" + on);
      loss.backward();
      loss_ref.backward();
      for (int i = 0; i < 3; ++i) {
        expect_close(ours[i].grad(), reference[i].grad(), "triplet_margin_loss grad" + on);
      }
    }
  }
}

TEST(MulticlassLosses, MultilabelMarginMatchesLibTorch) {
  for (const auto& device : devices()) {
    torch::manual_seed(6);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto x = torch::randn({4, 5}, options).requires_grad_();
    auto x_ref = x.detach().clone().requires_grad_();
    const auto target = torch::tensor({{0, 4, -1, 2, 2}, {1, 1, 3, -1, 0}, {-1, 0, 0, 0, 0},
                                       {4, 3, 2, 1, 0}},
                                      options.dtype(torch::kLong));
    fusedloss::nn::MultiLabelMarginLoss module(
        torch::nn::MultiLabelMarginLossOptions().reduction(torch::kMean));
    auto loss = module(x, target);
    auto loss_ref = F::multilabel_margin_loss(x_ref, target);
    const std::string on = " on " + device.str();
    expect_close(loss, loss_ref, "multilabel_margin_loss" + on);
    loss.backward();
    loss_ref.backward();
    expect_close(x.grad(), x_ref.grad(), "multilabel_margin_loss grad" + on);
  }
}

TEST(MulticlassLosses, JensenShannonForwardKLIsLibTorchKLDiv) {
  for (const auto& device : devices()) {
    torch::manual_seed(7);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto student = torch::randn({6, 11}, options).requires_grad_();
    auto student_ref = student.detach().clone().requires_grad_();
    const auto teacher = torch::randn({6, 11}, options);
    fusedloss::nn::JSDLoss module(
        fusedloss::functional::JensenShannonDivergenceOptions().beta(0.0).temperature(2.0));
    auto loss = module(student, teacher);
    auto loss_ref = F::kl_div(torch::log_softmax(student_ref / 2.0, -1),
                              torch::log_softmax(teacher / 2.0, -1),
                              F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
    const std::string on = " on " + device.str();
    expect_close(loss, loss_ref, "jensen_shannon_divergence beta=0" + on);
    loss.backward();
    loss_ref.backward();
    expect_close(student.grad(), student_ref.grad(), "jensen_shannon_divergence grad" + on);
  }
}

TEST(MulticlassLosses, CtcMatchesLibTorch) {
  for (const auto& device : devices()) {
    torch::manual_seed(8);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    const auto log_probs = torch::randn({12, 3, 5}, options).log_softmax(2);
    // Sample 0 repeats a label (a blank must separate them), sample 2 has an empty target.
    const auto padded = torch::tensor({{2, 2, 3}, {1, 4, 0}, {0, 0, 0}}, options.dtype(torch::kLong));
    const auto flat = torch::tensor({2, 2, 3, 1, 4}, options.dtype(torch::kLong));
    const auto input_lengths = torch::tensor({12, 9, 4}, torch::kLong);
    const auto target_lengths = torch::tensor({3, 2, 0}, torch::kLong);
    const std::string on = " on " + device.str();
    for (const auto& targets : {padded, flat}) {
      for (const auto& reduction : std::vector<torch::nn::CTCLossOptions::reduction_t>{
               torch::kNone, torch::kMean, torch::kSum}) {
        auto x = log_probs.clone().requires_grad_();
        auto x_ref = log_probs.clone().requires_grad_();
        const auto opts = torch::nn::CTCLossOptions().reduction(reduction).zero_infinity(true);
        auto loss = fusedloss::functional::ctc_loss(x, targets, input_lengths, target_lengths, opts);
        auto loss_ref = F::ctc_loss(x_ref, targets, input_lengths, target_lengths, opts);
        const std::string what = "ctc_loss, " + std::to_string(targets.dim()) + "-D targets" + on;
        expect_close(loss, loss_ref, what);
        loss.sum().backward();
        loss_ref.sum().backward();
        expect_close(x.grad(), x_ref.grad(), what + " grad");
      }
    }
    fusedloss::nn::CTCLoss module(torch::nn::CTCLossOptions().blank(0));
    expect_close(module(log_probs, padded, input_lengths, target_lengths),
                 F::ctc_loss(log_probs, padded, input_lengths, target_lengths), "CTCLoss" + on);
  }
}

TEST(MulticlassLosses, CtcRefusesBadLabels) {
  const auto log_probs = torch::randn({6, 2, 4}).log_softmax(2);
  const auto lengths = torch::tensor({6, 6}, torch::kLong);
  const auto two = torch::tensor({2, 2}, torch::kLong);
  EXPECT_THROW(fusedloss::functional::ctc_loss(log_probs, torch::tensor({{1, 4}, {1, 2}}),
                                               lengths, two),
               c10::IndexError);
  EXPECT_THROW(fusedloss::functional::ctc_loss(log_probs, torch::tensor({{1, 2}, {0, 2}}),
                                               lengths, two),
               c10::ValueError);
}
