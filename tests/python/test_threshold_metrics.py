"""Threshold-free metrics (precision-recall curve, ROC, AUROC, average precision): binned against
torchmetrics, exact against sklearn.metrics and torchmetrics; every task and average, logits and
probabilities, ignore_index, streaming and merging equal to one shot, the state independent of N
and moved with the module, CUDA against CPU, and bad input."""

import pytest
import torch

import fusedloss
from deferred import raises

M = fusedloss.metrics
tm = pytest.importorskip("torchmetrics.functional.classification", reason="torchmetrics is the binned oracle")
sk = pytest.importorskip("sklearn.metrics", reason="sklearn.metrics is the exact oracle")

THRESHOLDS = [11, [0.0, 0.2, 0.45, 0.5, 0.9], torch.linspace(0.05, 0.95, 7)]


def close(ours, theirs, what=""):
    if isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), what
        for a, b in zip(ours, theirs):
            close(a, b, what)
        return
    torch.testing.assert_close(torch.as_tensor(ours).double().cpu(), torch.as_tensor(theirs).double().cpu(),
                               rtol=1e-6, atol=1e-7, equal_nan=True, msg=what)


def binary_data(n=500, seed=0, logits=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, generator=g)
    t = (torch.rand(n, generator=g) < p).long()
    t[::17] = -1  # ignored where ignore_index=-1
    p[::13] = 0.5  # ties
    preds = torch.logit(p.clamp(1e-4, 1 - 1e-4)) if logits else p
    return preds.to(device), t.to(device)


def multiclass_data(n=400, c=4, seed=1, logits=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g) * 2
    t = torch.randint(c, (n,), generator=g)
    t[::19] = -1
    return (x if logits else x.softmax(1)).to(device), t.to(device)


def multilabel_data(n=400, c=3, seed=2, logits=False, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, c, generator=g)
    t = (torch.rand(n, c, generator=g) < p).long()
    t[::23, 1] = -1
    return (torch.logit(p.clamp(1e-4, 1 - 1e-4)) if logits else p).to(device), t.to(device)


@pytest.mark.parametrize("thresholds", THRESHOLDS + [None], ids=["int", "list", "tensor", "exact"])
@pytest.mark.parametrize("logits", [False, True])
@pytest.mark.parametrize("ignore_index", [None, -1])
def test_binary_matches_torchmetrics(thresholds, logits, ignore_index):
    preds, target = binary_data(logits=logits)
    if ignore_index is None:
        target = target.clamp_min(0)
    kw = dict(thresholds=thresholds, ignore_index=ignore_index)
    close(M.precision_recall_curve(preds, target, "binary", **kw), tm.binary_precision_recall_curve(preds, target, **kw))
    close(M.roc(preds, target, "binary", **kw), tm.binary_roc(preds, target, **kw))
    close(M.auroc(preds, target, "binary", **kw), tm.binary_auroc(preds, target, **kw))
    close(M.auroc(preds, target, "binary", max_fpr=0.3, **kw), tm.binary_auroc(preds, target, max_fpr=0.3, **kw))
    close(M.average_precision(preds, target, "binary", **kw), tm.binary_average_precision(preds, target, **kw))


@pytest.mark.parametrize("thresholds", THRESHOLDS + [None], ids=["int", "list", "tensor", "exact"])
@pytest.mark.parametrize("average", ["macro", "weighted", "none"])
@pytest.mark.parametrize("logits", [False, True])
def test_multiclass_matches_torchmetrics(thresholds, average, logits):
    preds, target = multiclass_data(logits=logits)
    kw = dict(thresholds=thresholds, ignore_index=-1)
    close(M.auroc(preds, target, "multiclass", num_classes=4, average=average, **kw),
          tm.multiclass_auroc(preds, target, 4, average=average, **kw), "auroc")
    close(M.average_precision(preds, target, "multiclass", num_classes=4, average=average, **kw),
          tm.multiclass_average_precision(preds, target, 4, average=average, **kw), "average precision")
    if average == "macro":
        close(M.precision_recall_curve(preds, target, "multiclass", num_classes=4, **kw),
              tm.multiclass_precision_recall_curve(preds, target, 4, **kw), "pr curve")
        close(M.roc(preds, target, "multiclass", num_classes=4, **kw), tm.multiclass_roc(preds, target, 4, **kw), "roc")


@pytest.mark.parametrize("thresholds", THRESHOLDS + [None], ids=["int", "list", "tensor", "exact"])
@pytest.mark.parametrize("average", ["micro", "macro", "weighted", "none"])
def test_multilabel_matches_torchmetrics(thresholds, average):
    preds, target = multilabel_data(logits=average == "weighted")
    kw = dict(thresholds=thresholds, ignore_index=-1)
    close(M.auroc(preds, target, "multilabel", num_labels=3, average=average, **kw),
          tm.multilabel_auroc(preds, target, 3, average=average, **kw), "auroc")
    close(M.average_precision(preds, target, "multilabel", num_labels=3, average=average, **kw),
          tm.multilabel_average_precision(preds, target, 3, average=average, **kw), "average precision")
    if average == "macro":
        close(M.precision_recall_curve(preds, target, "multilabel", num_labels=3, **kw),
              tm.multilabel_precision_recall_curve(preds, target, 3, **kw), "pr curve")
        close(M.roc(preds, target, "multilabel", num_labels=3, **kw), tm.multilabel_roc(preds, target, 3, **kw), "roc")


@pytest.mark.parametrize("thresholds", [11, [0.0, 0.3, 0.7, 0.9]], ids=["int", "list"])
def test_scores_on_the_thresholds_and_ignored_logits_as_torchmetrics(thresholds):
    # Scores exactly on the grid compare in the thresholds' float32, as torchmetrics'; an ignored
    # sample's score outside [0, 1] does not make a batch of probabilities logits (binary and
    # multiclass), as torchmetrics drops ignored samples first.
    preds = torch.linspace(0, 1, 11).repeat(30)
    target = (torch.arange(330) % 3 == 0).long()
    close(M.precision_recall_curve(preds, target, "binary", thresholds=thresholds),
          tm.binary_precision_recall_curve(preds, target, thresholds=thresholds))
    preds[5], target[5] = 7.0, -1
    for th in (thresholds, None):
        close(M.auroc(preds, target, "binary", thresholds=th, ignore_index=-1),
              tm.binary_auroc(preds, target, thresholds=th, ignore_index=-1))
    mc_preds, mc_target = multiclass_data()
    mc_preds[0], mc_target[0] = 9.0, -1
    for th in (thresholds, None):
        close(M.average_precision(mc_preds, mc_target, "multiclass", num_classes=4, thresholds=th, ignore_index=-1),
              tm.multiclass_average_precision(mc_preds, mc_target, 4, thresholds=th, ignore_index=-1))


def test_exact_matches_sklearn():
    preds, target = binary_data(2000, seed=5)
    target = target.clamp_min(0)
    y, s = target.numpy(), preds.double().numpy()
    close(M.auroc(preds, target, "binary"), sk.roc_auc_score(y, s))
    close(M.auroc(preds, target, "binary", max_fpr=0.2), sk.roc_auc_score(y, s, max_fpr=0.2))
    close(M.average_precision(preds, target, "binary"), sk.average_precision_score(y, s))
    precision, recall, thresholds = M.precision_recall_curve(preds, target, "binary")
    sk_p, sk_r, sk_t = sk.precision_recall_curve(y, s)
    close((precision, recall, thresholds), (torch.tensor(sk_p.copy()), torch.tensor(sk_r.copy()), torch.tensor(sk_t.copy())))
    fpr, tpr, _ = M.roc(preds, target, "binary")
    sk_fpr, sk_tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    close((fpr, tpr), (torch.tensor(sk_fpr.copy()), torch.tensor(sk_tpr.copy())))
    mc_preds, mc_target = multiclass_data(seed=6)
    keep = mc_target >= 0
    for average in ("macro", "weighted"):
        close(M.auroc(mc_preds[keep], mc_target[keep], "multiclass", num_classes=4, average=average),
              sk.roc_auc_score(mc_target[keep].numpy(), mc_preds[keep].double().numpy(), multi_class="ovr",
                               average=average))


def test_calibration_op_opcheck(device):
    preds, target = multiclass_data(50, device=device)
    torch.library.opcheck(torch.ops.fusedloss._calibration_bins, (preds, target, "multiclass", 10, 4, -1))
    torch.library.opcheck(torch.ops.fusedloss._calibration_bins,
                          (preds[:, 0].sigmoid(), (target > 1).long(), "binary", 5, None, None))
    sums, invalid = torch.ops.fusedloss._calibration_bins(preds, target, "multiclass", 10, 4, -1)
    torch.library.opcheck(torch.ops.fusedloss._calibration_error, (sums, invalid, "l2"))


@pytest.mark.parametrize("task,data,kw", [
    ("binary", binary_data, {}), ("multiclass", multiclass_data, {"num_classes": 4}),
    ("multilabel", multilabel_data, {"num_labels": 3})])
@pytest.mark.parametrize("thresholds", [50, None], ids=["binned", "exact"])
def test_streaming_merge_and_forward_equal_one_shot(task, data, kw, thresholds):
    preds, target = data(logits=False)
    one_shot = M.auroc(preds, target, task, thresholds=thresholds, ignore_index=-1, **kw)
    metric, other = (M.AUROC(task, thresholds=thresholds, ignore_index=-1, **kw) for _ in range(2))
    half = preds.shape[0] // 2
    batch_value = metric(preds[:half], target[:half])
    close(batch_value, M.auroc(preds[:half], target[:half], task, thresholds=thresholds, ignore_index=-1, **kw))
    other.update(preds[half:], target[half:])
    close(metric.merge(other).compute(), one_shot)
    ap = M.AveragePrecision(task, thresholds=thresholds, ignore_index=-1, **kw)
    for chunk in range(0, preds.shape[0], 97):
        ap.update(preds[chunk:chunk + 97], target[chunk:chunk + 97])
    close(ap.compute(), M.average_precision(preds, target, task, thresholds=thresholds, ignore_index=-1, **kw))
    ap.reset()
    ap.update(preds[:50], target[:50])
    close(ap.compute(), M.average_precision(preds[:50], target[:50], task, thresholds=thresholds, ignore_index=-1, **kw))


def test_binned_state_is_a_module_buffer_independent_of_n():
    metric = M.AUROC("multiclass", num_classes=4, thresholds=200)
    sizes = set()
    for n in (10, 10_000):
        preds, target = multiclass_data(n)
        metric.update(preds, target.clamp_min(0))
        sizes.add(sum(b.numel() * b.element_size() for b in metric.buffers()))
    assert sizes == {4 * 2 * 201 * 8 + 200 * 4 + 8}  # histogram, float32 thresholds, invalid count
    restored = M.AUROC("multiclass", num_classes=4, thresholds=200)
    restored.load_state_dict(metric.state_dict())
    close(restored.compute(), metric.compute())
    assert metric.to(torch.float64).histogram.dtype == torch.long  # counts stay integers


def test_curves_module_and_bad_input():
    preds, target = binary_data()
    target = target.clamp_min(0)
    curve = M.PrecisionRecallCurve("binary", thresholds=5)
    curve.update(preds, target)
    close(curve.compute(), tm.binary_precision_recall_curve(preds, target, thresholds=5))
    with pytest.raises(ValueError, match=r"thresholds must be in ascending order: 0.5 at position 1 is followed by 0.2"):
        M.auroc(preds, target, "binary", thresholds=[0.1, 0.5, 0.2])
    with pytest.raises(ValueError, match="thresholds as an int must be >= 2"):
        M.AUROC("binary", thresholds=1)
    with raises(ValueError, match="target 2 at position 3 is not a label: expected 0 or 1"):
        M.auroc(preds, torch.where(torch.arange(500) == 3, 2, target), "binary", thresholds=10)
    with raises(ValueError, match=r"target 4 at position 0 is not a label: expected a class in \[0, num_classes\)"):
        M.auroc(torch.rand(3, 4), torch.tensor([4, 0, 1]), "multiclass", num_classes=4, thresholds=10)
    with pytest.raises(ValueError, match=r"multiclass expects preds \(N, 4\) and target \(N\)"):
        M.auroc(torch.rand(3, 5), torch.tensor([1, 0, 1]), "multiclass", num_classes=4, thresholds=10)
    with pytest.raises(ValueError, match="average='micro' applies to task='multilabel' only"):
        M.auroc(torch.rand(3, 4), torch.tensor([1, 0, 1]), "multiclass", num_classes=4, average="micro")
    with pytest.raises(ValueError, match="max_fpr must be in"):
        M.auroc(preds, target, "binary", max_fpr=1.5)


def test_exact_mode_bad_input():
    # thresholds=None keeps every score: the same shapes and labels are refused as when binned.
    preds, target = binary_data()
    target = target.clamp_min(0)
    with pytest.raises(ValueError, match="target 2 is not a label of a binary task"):
        M.auroc(preds, torch.where(torch.arange(500) == 3, 2, target), "binary")
    with pytest.raises(ValueError, match=r"target 4 is not a label of a multiclass task \(expected a class in \[0, 4\)"):
        M.auroc(torch.rand(3, 4), torch.tensor([4, 0, 1]), "multiclass", num_classes=4)
    with pytest.raises(ValueError, match=r"multiclass expects preds \(N, 4\) and target \(N\)"):
        M.auroc(torch.rand(3, 5), torch.tensor([1, 0, 1]), "multiclass", num_classes=4)
    with pytest.raises(ValueError, match="binary expects preds and target of one shape"):
        M.average_precision(preds, target[:-1], "binary")
    with pytest.raises(ValueError, match=r"multilabel expects preds and target of one shape \(N, 3\)"):
        M.auroc(torch.rand(4, 3), torch.ones(4, 2, dtype=torch.long), "multilabel", num_labels=3)
    with pytest.raises(ValueError, match="target 3 is not a label of a multilabel task"):
        M.auroc(torch.rand(4, 3), torch.tensor([[0, 1, 3]] * 4), "multilabel", num_labels=3, ignore_index=-1)


def test_histogram_op_opcheck(device):
    preds, target = multiclass_data(50, device=device)
    thresholds = torch.linspace(0, 1, 9, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.fusedloss._threshold_histogram,
                          (preds, target.clamp_min(0), thresholds, "multiclass", 4, None))
    torch.library.opcheck(torch.ops.fusedloss._threshold_histogram,
                          (preds[:, 0], (target > 1).long(), thresholds, "binary", 1, -1))


@pytest.mark.parametrize("task,data,kw", [
    ("binary", binary_data, {}), ("multiclass", multiclass_data, {"num_classes": 4}),
    ("multilabel", multilabel_data, {"num_labels": 3})])
@pytest.mark.parametrize("logits", [False, True])
def test_cuda_histogram_equals_cpu(task, data, kw, logits):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (CUDA kernels are compiled, not run, here)")
    preds, target = data(logits=logits)
    for thresholds in (11, 1000):  # the state in shared memory, and (8008 counters) in global memory
        cpu = M.AUROC(task, thresholds=thresholds, ignore_index=-1, **kw)
        gpu = M.AUROC(task, thresholds=thresholds, ignore_index=-1, **kw).cuda()
        cpu.update(preds, target)
        torch.cuda.set_sync_debug_mode("error")
        try:
            gpu.update(preds.cuda(), target.cuda())  # no host synchronization in update
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.equal(gpu.histogram.cpu(), cpu.histogram)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("logits", [False, True])
def test_calibration_error_matches_torchmetrics(norm, logits):
    preds, target = binary_data(logits=logits)
    for ignore_index in (None, -1):
        t = target if ignore_index is not None else target.clamp_min(0)
        close(M.calibration_error(preds, t, "binary", n_bins=10, norm=norm, ignore_index=ignore_index),
              tm.binary_calibration_error(preds, t, n_bins=10, norm=norm, ignore_index=ignore_index))
    mc_preds, mc_target = multiclass_data(logits=logits)
    close(M.calibration_error(mc_preds, mc_target, "multiclass", num_classes=4, norm=norm, ignore_index=-1),
          tm.multiclass_calibration_error(mc_preds, mc_target, 4, norm=norm, ignore_index=-1))
    metric, other = M.CalibrationError("multiclass", num_classes=4, norm=norm), M.CalibrationError(
        "multiclass", num_classes=4, norm=norm)
    keep = mc_target >= 0
    metric(mc_preds[keep][:150], mc_target[keep][:150])
    other.update(mc_preds[keep][150:], mc_target[keep][150:])
    close(metric.merge(other).compute(), tm.multiclass_calibration_error(mc_preds[keep], mc_target[keep], 4, norm=norm))
    assert metric.bin_sums.shape == (3, 16)
    with pytest.raises(ValueError, match="norm must be 'l1', 'l2' or 'max', got 'l3'"):
        M.CalibrationError("binary", norm="l3")


def test_calibration_error_refuses_targets_that_are_not_labels():
    preds, target = binary_data()
    target = target.clamp_min(0)
    bad = torch.where(torch.arange(500) == 3, 2, target)
    with pytest.raises(ValueError, match=r"calibration_error: 1 targets were not labels \(0/1"):
        M.calibration_error(preds, bad, "binary")
    M.calibration_error(preds, torch.where(torch.arange(500) == 3, -1, target), "binary", ignore_index=-1)
    streaming = M.CalibrationError("multiclass", num_classes=4)
    streaming.update(torch.rand(3, 4), torch.tensor([1, 0, 1]))
    streaming.update(torch.rand(3, 4), torch.tensor([4, -1, 1]))  # counted here, raised at compute
    with pytest.raises(ValueError, match="calibration_error: 2 targets were not labels"):
        streaming.compute()
    streaming.reset()
    streaming.update(torch.rand(3, 4), torch.tensor([1, 0, 3]))
    assert torch.isfinite(streaming.compute())


def test_metric_collection_shares_one_pass_per_state(monkeypatch):
    preds, target = binary_data()
    target = target.clamp_min(0)
    collection = M.MetricCollection({"auroc": M.AUROC("binary", thresholds=50),
                                     "ap": M.AveragePrecision("binary", thresholds=50),
                                     "f1": M.F1Score("binary"), "accuracy": M.Accuracy("binary"),
                                     "ece": M.CalibrationError("binary")}, prefix="val_")
    counted = {"histogram": 0}
    original = fusedloss.threshold_metrics._histogram

    def counting(*args):
        counted["histogram"] += 1
        return original(*args)

    monkeypatch.setattr(fusedloss.threshold_metrics, "_histogram", counting)
    batch = collection(preds[:250], target[:250])
    collection.update(preds[250:], target[250:])
    assert counted["histogram"] == 2  # one pass per update for AUROC and AP together
    assert set(batch) == {"val_auroc", "val_ap", "val_f1", "val_accuracy", "val_ece"}
    close(batch["val_auroc"], tm.binary_auroc(preds[:250], target[:250], thresholds=50))
    result = collection.compute()
    close(result["val_auroc"], tm.binary_auroc(preds, target, thresholds=50))
    close(result["val_ap"], tm.binary_average_precision(preds, target, thresholds=50))
    close(result["val_f1"], tm.binary_f1_score(preds, target))
    close(result["val_ece"], tm.binary_calibration_error(preds, target))
    collection.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        collection["f1"].compute()
    with pytest.raises(ValueError, match="is not a fusedloss metric"):
        M.MetricCollection({"loss": torch.nn.MSELoss()})
    with pytest.raises(ValueError, match="two metrics of one class in a list"):
        M.MetricCollection([M.Accuracy("binary"), M.Accuracy("multiclass", num_classes=3)])


def test_plots_draw_the_curves(tmp_path):
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib draws the plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds, target = binary_data()
    target = target.clamp_min(0)
    precision, recall, _ = M.precision_recall_curve(preds, target, "binary", thresholds=20)
    fpr, tpr, _ = M.roc(preds, target, "binary", thresholds=20)
    calibration = M.CalibrationError("binary")
    calibration.update(preds, target)
    fig, axes = plt.subplots(1, 3)
    fusedloss.plots.plot_precision_recall(precision, recall, axes[0], label="pr")
    fusedloss.plots.plot_roc(fpr, tpr, axes[1])
    fusedloss.plots.plot_reliability(calibration, axes[2])
    drawn = axes[0].lines[0].get_xydata()
    assert len(drawn) == int((~precision.isnan()).sum())  # undefined precisions are left out
    assert len(axes[1].lines) == 2 and len(axes[2].lines) == 2  # the curve and the diagonal
    fig.savefig(tmp_path / "plots.png")
    plt.close(fig)


def test_cuda_updates_never_wait_for_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (CUDA kernels are compiled, not run, here)")
    preds, target = binary_data(device="cuda")
    target = target.clamp_min(0)
    ml_preds, ml_target = multilabel_data(device="cuda")
    collection = M.MetricCollection({"auroc": M.AUROC("binary", thresholds=50), "f1": M.F1Score("binary"),
                                     "ece": M.CalibrationError("binary")})
    multilabel = M.F1Score("multilabel", num_labels=3, ignore_index=-1)
    for _ in range(2):  # the first update moves the states to the GPU; the second must not wait
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            collection.update(preds, target)
            multilabel.update(ml_preds, ml_target)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    close(collection.compute()["f1"], tm.binary_f1_score(preds, target))  # twice the data: the same F1


def test_calibration_ignored_scores_do_not_make_a_batch_logits():
    # Probabilities, but an ignored sample holds a score outside [0, 1]: torchmetrics drops the
    # ignored samples before deciding on sigmoid/softmax, and so must we.
    preds, target = binary_data(logits=False)
    preds, target = preds.clone(), target.clone()
    preds[0], target[0] = 7.0, -1
    close(M.calibration_error(preds, target, "binary", n_bins=10, ignore_index=-1),
          tm.binary_calibration_error(preds, target, n_bins=10, ignore_index=-1))
    mc_preds, mc_target = multiclass_data(logits=False)
    mc_preds, mc_target = mc_preds.clone(), mc_target.clone()
    mc_preds[0, 0], mc_target[0] = -3.0, -1
    close(M.calibration_error(mc_preds, mc_target, "multiclass", num_classes=4, ignore_index=-1),
          tm.multiclass_calibration_error(mc_preds, mc_target, 4, ignore_index=-1))
