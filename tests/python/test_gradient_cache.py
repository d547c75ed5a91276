"""The CPU gradient cache: a fused loss's large CPU gradient (over 1 MiB) is kept when its tensor
dies and reused by the next gradient of the same size, within a limit, thread safe."""

import threading

import pytest
import torch
import torch.nn.functional as F

import fusedloss
from tolerances import assert_close

FL = fusedloss.functional
BIG = 10 << 20  # float32 elements: a 40 MiB gradient, backed by huge pages


@pytest.fixture(autouse=True)
def fresh_cache():
    previous = fusedloss.set_cpu_cache_limit(1 << 30)
    fusedloss.cpu_cache_clear()
    yield
    fusedloss.cpu_cache_clear()
    fusedloss.set_cpu_cache_limit(previous)


def step(x, y, fn=FL.mse_loss):
    x.grad = None
    fn(x, y).backward()
    return x.grad.data_ptr()


def test_next_gradient_of_the_same_size_reuses_the_block():
    x, y = torch.randn(BIG, requires_grad=True), torch.randn(BIG)
    first = step(x, y)
    assert fusedloss.cpu_cache_bytes() == 0  # the block is x.grad
    x.grad = None
    assert fusedloss.cpu_cache_bytes() >= BIG * 4
    assert step(x, y) == first
    assert fusedloss.cpu_cache_bytes() == 0


def test_reused_block_holds_the_new_gradient():
    x, y = torch.randn(BIG, requires_grad=True), torch.randn(BIG)
    step(x, y, FL.l1_loss)  # leaves the block full of l1's gradient
    step(x, y, FL.huber_loss)
    assert_close(x.grad, torch.autograd.grad(F.huber_loss(x, y), x)[0], torch.float32)
    logits = torch.randn(2048, 5000, requires_grad=True)  # 40 MB: cross entropy's gradient too
    target = torch.randint(5000, (2048,))
    for _ in range(2):
        logits.grad = None
        FL.cross_entropy(logits, target).backward()
    assert_close(logits.grad, torch.autograd.grad(F.cross_entropy(logits, target), logits)[0],
                 torch.float32)


def test_limit_and_clear():
    x, y = torch.randn(BIG, requires_grad=True), torch.randn(BIG)
    step(x, y)
    assert fusedloss.set_cpu_cache_limit(0) == 1 << 30
    x.grad = None
    assert fusedloss.cpu_cache_bytes() == 0  # over the limit: freed at once
    fusedloss.set_cpu_cache_limit(1 << 30)
    step(x, y)
    x.grad = None
    assert fusedloss.cpu_cache_bytes() > 0
    fusedloss.cpu_cache_clear()
    assert fusedloss.cpu_cache_bytes() == 0
    assert fusedloss.set_cpu_cache_limit(1 << 30) == 1 << 30  # clear keeps the limit


def test_steps_of_different_sizes_stay_within_the_limit():
    fusedloss.set_cpu_cache_limit(100 << 20)
    for n in (BIG, BIG + (2 << 20), BIG + (4 << 20), BIG + (6 << 20)):
        x, y = torch.randn(n, requires_grad=True), torch.randn(n)
        step(x, y)
        del x
        assert fusedloss.cpu_cache_bytes() <= 100 << 20


def test_small_gradients_do_not_enter_the_cache():
    x, y = torch.randn(1 << 18, requires_grad=True), torch.randn(1 << 18)  # 1 MiB: malloc's
    step(x, y)
    x.grad = None
    assert fusedloss.cpu_cache_bytes() == 0


def test_medium_gradients_are_cached_rounded_to_pages():
    # 26 MB (65536 x 100 float32): under the huge-page size, cached at its size rounded to 4 KiB.
    x, y = torch.randn(65536 * 100 + 3, requires_grad=True), torch.randn(65536 * 100 + 3)
    step(x, y)
    first = x.grad.data_ptr()
    x.grad = None
    assert fusedloss.cpu_cache_bytes() == -(-(65536 * 100 + 3) * 4 // 4096) * 4096
    step(x, y)
    assert x.grad.data_ptr() == first
    assert_close(x.grad, 2 * (x.detach() - y) / x.numel(), torch.float32)


def test_threads_share_the_cache_safely():
    errors = []

    def work(seed):
        try:
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(BIG, generator=g, requires_grad=True)
            y = torch.randn(BIG, generator=g)
            for _ in range(3):
                step(x, y)
                assert_close(x.grad, 2 * (x.detach() - y) / BIG, torch.float32)
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert fusedloss.cpu_cache_bytes() <= 1 << 30
