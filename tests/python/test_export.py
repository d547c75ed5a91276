"""Deployment after TorchScript, for every public loss op and the ops the metrics run (the table in
op_samples.py): torch.export with a dynamic batch dimension, run at other batch sizes against
eager, and with a dynamic class count too for the ops that have one; torch.compile(fullgraph=True)
with Inductor and dynamic shapes, forward and backward, one graph for three batch sizes. The
AOTInductor package (a .pt2 whose forward returns fusedloss losses and metrics) is in
test_aot_inductor.py."""

import pytest
import torch

import fusedloss  # noqa: F401  (registers torch.ops.fusedloss)
from op_samples import CLASS_SAMPLES, SAMPLES
from tolerances import assert_close

BATCHES = (3, 8, 5)


def split(sample, device="cpu"):
    """The tensor arguments (in order, on `device`) and a function that puts them back among the
    others."""
    args, kwargs, dims = sample
    places = [i for i, d in enumerate(dims) if isinstance(args[i], torch.Tensor)]
    tensors = [args[i].to(device) for i in places]

    def call(op, *new):
        full = list(args)
        for i, t in zip(places, new):
            full[i] = t
        return op(*full, **kwargs)
    return tensors, [dims[i] for i in places], call


class OpCall(torch.nn.Module):
    def __init__(self, name, call):
        super().__init__()
        self.op = getattr(torch.ops.fusedloss, name)
        self.call = call

    def forward(self, *tensors):
        return self.call(self.op, *tensors)


def outputs(value):
    return list(value) if isinstance(value, (tuple, list)) else [value]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_export_with_a_dynamic_batch(name, device):
    tensors, dims, call = split(SAMPLES[name](BATCHES[0]), device)
    batch = torch.export.Dim("batch", min=2, max=4096)
    shapes = tuple(None if d is None else {d[0]: d[1] * batch} if isinstance(d, tuple) else {d: batch}
                   for d in dims)
    program = torch.export.export(OpCall(name, call), tuple(tensors), dynamic_shapes=(shapes,))
    module = program.module()
    for b in BATCHES:
        tensors_b, _, call_b = split(SAMPLES[name](b), device)
        expected = outputs(call_b(getattr(torch.ops.fusedloss, name), *tensors_b))
        for got, want in zip(outputs(module(*tensors_b)), expected):
            if want.is_floating_point():
                assert_close(got, want)
            else:
                assert torch.equal(got, want)


@pytest.mark.parametrize("name", sorted(CLASS_SAMPLES))
def test_export_with_dynamic_batch_and_classes(name, device):
    args, kwargs, dims = CLASS_SAMPLES[name](3, 7)
    tensors, dims, call = split((args, kwargs, dims), device)
    names = {"batch": torch.export.Dim("batch", min=2, max=4096),
             "classes": torch.export.Dim("classes", min=3, max=4096)}
    shapes = tuple({d: names[n] for d, n in spec.items()} if spec else None for spec in dims)
    module = torch.export.export(OpCall(name, call), tuple(tensors), dynamic_shapes=(shapes,)).module()
    for b, c in [(3, 7), (8, 11), (5, 4)]:
        tensors_b, _, call_b = split(CLASS_SAMPLES[name](b, c), device)
        expected = outputs(call_b(getattr(torch.ops.fusedloss, name), *tensors_b))
        for got, want in zip(outputs(module(*tensors_b)), expected):
            assert_close(got, want)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_inductor_fullgraph_dynamic_one_graph(name, device):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    op = getattr(torch.ops.fusedloss, name)
    compiled = None
    for b in BATCHES:
        tensors, _, call = split(SAMPLES[name](b), device)  # the same non-tensors for every b
        leaves = [t.clone().requires_grad_(t.is_floating_point() and i == 0 and not name.startswith("_"))
                  for i, t in enumerate(tensors)]
        if compiled is None:
            first_call = call
            compiled = torch.compile(lambda *ts: first_call(op, *ts), backend="inductor",
                                     fullgraph=True, dynamic=True)
        got = outputs(compiled(*leaves))
        reference = [t.detach().clone().requires_grad_(t.requires_grad) for t in leaves]
        want = outputs(call(op, *reference))
        for g, w in zip(got, want):
            if w.is_floating_point():
                assert_close(g, w.detach())
            else:
                assert torch.equal(g, w)
        if leaves[0].requires_grad:
            sum(g.float().sum() for g in got if g.is_floating_point()).backward()
            sum(w.float().sum() for w in want if w.is_floating_point()).backward()
            assert_close(leaves[0].grad, reference[0].grad)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_exported_metric_still_refuses_bad_labels():
    # The exported program runs the real ops: on the CPU a label outside [0, C) raises there as in
    # eager. (Traced, the check that reads the invalid count cannot run: a CUDA program's metric is
    # NaN instead, see ops/arguments.h.)
    class Accuracy(torch.nn.Module):
        def forward(self, logits, labels):
            return fusedloss.metrics.accuracy(logits, labels, task="multiclass", num_classes=4)

    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    module = torch.export.export(Accuracy(), (logits, labels)).module()
    assert_close(module(logits, labels), Accuracy()(logits, labels))
    with pytest.raises(ValueError, match="target 7 at position 2 is not a class in"):
        module(logits, torch.tensor([0, 1, 7, 3, 0, 1]))
