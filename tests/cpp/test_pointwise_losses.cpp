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
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, torch::nn::MSELossOptions::reduction_t)> ours;
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, torch::nn::MSELossOptions::reduction_t)> torch_ref;
};

std::vector<LossCase> loss_cases() {
  return {
      {"mse_loss",
       [](auto& x, auto& y, auto r) { return fusedloss::functional::mse_loss(x, y, torch::nn::MSELossOptions().reduction(r)); },
       [](auto& x, auto& y, auto r) { return F::mse_loss(x, y, F::MSELossFuncOptions().reduction(r)); }},
      {"l1_loss",
       [](auto& x, auto& y, auto r) { return fusedloss::functional::l1_loss(x, y, torch::nn::L1LossOptions().reduction(r)); },
       [](auto& x, auto& y, auto r) { return F::l1_loss(x, y, F::L1LossFuncOptions().reduction(r)); }},
      {"huber_loss",
       [](auto& x, auto& y, auto r) { return fusedloss::functional::huber_loss(x, y, torch::nn::HuberLossOptions().reduction(r).delta(0.7)); },
       [](auto& x, auto& y, auto r) { return F::huber_loss(x, y, F::HuberLossFuncOptions().reduction(r).delta(0.7)); }},
      {"smooth_l1_loss",
       [](auto& x, auto& y, auto r) { return fusedloss::functional::smooth_l1_loss(x, y, torch::nn::SmoothL1LossOptions().reduction(r).beta(0.5)); },
       [](auto& x, auto& y, auto r) { return F::smooth_l1_loss(x, y, F::SmoothL1LossFuncOptions().reduction(r), 0.5); }},
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

void expect_close(const torch::Tensor& actual, const torch::Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << what;
  EXPECT_TRUE(torch::allclose(actual, expected, /*rtol=*/1e-5, /*atol=*/1e-6))
      << what << "\nactual:\n" << actual << "\nexpected:\n" << expected;
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
  expect_close(smooth(x, y), F::smooth_l1_loss(x, y, F::SmoothL1LossFuncOptions(), 2.0), "SmoothL1Loss");
  // Modules are real torch::nn modules: they print and clone.
  std::ostringstream printed;
  printed << *mse;
  EXPECT_EQ(printed.str(), "fusedloss::nn::MSELoss()");
  EXPECT_NE(huber->clone().get(), nullptr);
}

TEST(PointwiseLosses, DispatcherCallEqualsCppApi) {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("fusedloss::huber_loss", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view, double)>();
  auto x = torch::randn({5, 3});
  auto y = torch::randn({5, 3});
  expect_close(op.call(x, y, "sum", 0.25),
               fusedloss::functional::huber_loss(x, y, torch::nn::HuberLossOptions().reduction(torch::kSum).delta(0.25)),
               "dispatcher huber_loss");
}

TEST(PointwiseLosses, BroadcastingAndDoublePrecision) {
  auto x = torch::randn({4, 1, 3}, torch::kDouble).requires_grad_();
  auto y = torch::randn({5, 1}, torch::kDouble).requires_grad_();
  auto x_ref = x.detach().clone().requires_grad_();
  auto y_ref = y.detach().clone().requires_grad_();
  auto loss = fusedloss::functional::mse_loss(x, y, torch::nn::MSELossOptions(torch::kSum));
  auto [bx, by] = std::make_tuple(torch::broadcast_tensors({x_ref, y_ref})[0], torch::broadcast_tensors({x_ref, y_ref})[1]);
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
  EXPECT_THROW(fusedloss::functional::huber_loss(x, x, torch::nn::HuberLossOptions().delta(0.0)), c10::Error);
  EXPECT_THROW(fusedloss::functional::mse_loss(x.to(torch::kLong), x.to(torch::kLong)), c10::NotImplementedError);
}

TEST(PointwiseLosses, Cuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine; CUDA is covered by ValuesAndGradientsMatchLibTorch where one is present";
  auto x = torch::randn({1 << 20}, torch::kCUDA);
  auto y = torch::randn({1 << 20}, torch::kCUDA);
  expect_close(fusedloss::functional::mse_loss(x, y), torch::mse_loss(x, y), "cuda mse 1M");
  // A misaligned view takes the scalar (non-vector) path.
  expect_close(fusedloss::functional::l1_loss(x.narrow(0, 1, 1000), y.narrow(0, 3, 1000)),
               F::l1_loss(x.narrow(0, 1, 1000), y.narrow(0, 3, 1000)), "cuda l1 misaligned");
}

}  // namespace
