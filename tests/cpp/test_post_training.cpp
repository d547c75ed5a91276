// The post-training heads through the C++ API against LibTorch's unfused formulas: per-token
// log-probabilities and entropy, GRPO and DPO from the head, distillation from hidden states.
// CPU and, when one is present, CUDA.

#include <fusedloss/fusedloss.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

namespace {

namespace F = torch::nn::functional;
namespace FL = fusedloss::functional;

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

TEST(PostTraining, LinearLogProbsMatchLogSoftmax) {
  for (const auto& device : devices()) {
    torch::manual_seed(0);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto x = torch::randn({2, 5, 8}, options).requires_grad_();
    auto w = torch::randn({13, 8}, options).requires_grad_();
    auto x_ref = x.detach().clone().requires_grad_();
    auto w_ref = w.detach().clone().requires_grad_();
    const auto ids = torch::randint(0, 13, {2, 5}, options.dtype(torch::kLong));
    auto [log_probs, entropy] = FL::linear_log_probs(
        x, w, ids, FL::LinearLogProbsFuncOptions().temperature(0.7).chunk_size(3));
    const auto log_p = torch::log_softmax(torch::matmul(x_ref, w_ref.t()) / 0.7, -1);
    const auto picked = log_p.gather(-1, ids.unsqueeze(-1)).squeeze(-1);
    const auto expected_entropy = -(log_p.exp() * log_p).sum(-1);
    expect_close(log_probs, picked, "log_probs");
    expect_close(entropy, expected_entropy, "entropy");
    (log_probs.sum() * 2 + entropy.sum()).backward();
    (picked.sum() * 2 + expected_entropy.sum()).backward();
    expect_close(x.grad(), x_ref.grad(), "input grad");
    expect_close(w.grad(), w_ref.grad(), "weight grad");
  }
}

TEST(PostTraining, GrpoFromTheHeadIsGrpoOnLogProbs) {
  for (const auto& device : devices()) {
    torch::manual_seed(1);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto x = torch::randn({3, 4, 6}, options).requires_grad_();
    const auto w = torch::randn({11, 6}, options);
    const auto ids = torch::randint(0, 11, {3, 4}, options.dtype(torch::kLong));
    const auto advantages = torch::randn({3}, options);
    const auto mask = torch::ones({3, 4}, options.dtype(torch::kBool));
    const auto ref = torch::randn({3, 4}, options) - 3;
    const auto grpo = FL::GrpoLossOptions().ref_per_token_logps(ref).beta(0.04).loss_type("grpo");
    const auto fused = FL::linear_grpo_loss(x, w, ids, advantages, mask, grpo);
    auto x_ref = x.detach().clone().requires_grad_();
    const auto log_probs = std::get<0>(FL::linear_log_probs(x_ref, w, ids));
    const auto unfused = FL::grpo_loss(log_probs, advantages, mask, grpo);
    expect_close(fused, unfused, "loss");
    fused.backward();
    unfused.backward();
    expect_close(x.grad(), x_ref.grad(), "input grad");
    // The same pairs as chosen and rejected, with the policy as its own reference: DPO's
    // sigmoid loss is log 2 and the rewards are 0.
    auto [dpo, chosen_rewards, rejected_rewards] = FL::dpo_loss(
        log_probs.sum(-1), log_probs.sum(-1), log_probs.sum(-1).detach(),
        log_probs.sum(-1).detach());
    expect_close(dpo, torch::full({}, std::log(2.0), options), "dpo");
    expect_close(chosen_rewards, torch::zeros({3}, options), "rewards");
  }
}

TEST(PostTraining, LinearKlDivIsLibTorchKLDiv) {
  for (const auto& device : devices()) {
    torch::manual_seed(2);
    const auto options = torch::TensorOptions().dtype(torch::kDouble).device(device);
    auto x = torch::randn({7, 5}, options).requires_grad_();
    auto w = torch::randn({9, 5}, options).requires_grad_();
    const auto teacher_x = torch::randn({7, 4}, options);
    const auto teacher_w = torch::randn({9, 4}, options);
    const auto loss = FL::linear_kl_div(x, w, teacher_x,
                                        FL::LinearJsdFuncOptions().teacher_weight(teacher_w));
    auto x_ref = x.detach().clone().requires_grad_();
    const auto expected = F::kl_div(
        torch::log_softmax(torch::matmul(x_ref, w.detach().t()), -1),
        torch::log_softmax(torch::matmul(teacher_x, teacher_w.t()), -1),
        F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
    expect_close(loss, expected, "loss");
    loss.backward();
    expected.backward();
    expect_close(x.grad(), x_ref.grad(), "input grad");
  }
}

}  // namespace
