"""Trains a small sequence recognizer with CTC on synthetic "handwriting": each sample is a digit
string of 3 to 8 labels, drawn as a run of noisy frames per digit (2 to 4 frames, each digit its
own pattern) with noise frames between and around them. The model (two 1-D convolutions and a
bidirectional GRU) never sees where a digit starts or ends; fusedloss.nn.CTCLoss sums over every
alignment. Reports the greedy decoding's label error rate on held-out data and plots the loss.

    python examples/python/ctc_recognizer.py [--steps 300] [--out docs/ctc_recognizer.png]

Needs matplotlib and tqdm (pip install matplotlib tqdm).
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import trange  # noqa: E402

import fusedloss  # noqa: E402

DIGITS = 10  # labels 1..10; 0 is the CTC blank
FEATURES = 16
MAX_FRAMES = 60


def make_batch(n, generator, patterns):
    """Frames (MAX_FRAMES, n, FEATURES), padded targets (n, 8), and both lengths."""
    frames = 0.6 * torch.randn(MAX_FRAMES, n, FEATURES, generator=generator)
    targets = torch.zeros(n, 8, dtype=torch.long)
    input_lengths = torch.zeros(n, dtype=torch.long)
    target_lengths = torch.randint(3, 9, (n,), generator=generator)
    for i in range(n):
        t = int(torch.randint(0, 3, (1,), generator=generator))
        for k in range(int(target_lengths[i])):
            digit = int(torch.randint(1, DIGITS + 1, (1,), generator=generator))
            targets[i, k] = digit
            duration = int(torch.randint(2, 5, (1,), generator=generator))
            frames[t:t + duration, i] += patterns[digit]
            t += duration + int(torch.randint(0, 3, (1,), generator=generator))  # a gap, or none
        input_lengths[i] = min(MAX_FRAMES, t + int(torch.randint(0, 4, (1,), generator=generator)))
    return frames, targets, input_lengths, target_lengths


class Recognizer(torch.nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv1d(FEATURES, hidden, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv1d(hidden, hidden, 3, padding=1), torch.nn.ReLU())
        self.rnn = torch.nn.GRU(hidden, hidden, bidirectional=True)
        self.out = torch.nn.Linear(2 * hidden, DIGITS + 1)

    def forward(self, frames):  # (T, N, F) -> log-probabilities (T, N, DIGITS + 1)
        h = self.conv(frames.permute(1, 2, 0)).permute(2, 0, 1)
        h, _ = self.rnn(h)
        return self.out(h).log_softmax(2)


def greedy_decode(log_probs, input_lengths):
    """The most likely class per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(2).T
    decoded = []
    for row, length in zip(best.tolist(), input_lengths.tolist()):
        labels, previous = [], 0
        for c in row[:length]:
            if c != previous and c != 0:
                labels.append(c)
            previous = c
        decoded.append(labels)
    return decoded


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            previous, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, previous + (x != y))
    return d[-1]


def label_error_rate(model, batch):
    frames, targets, input_lengths, target_lengths = batch
    with torch.no_grad():
        decoded = greedy_decode(model(frames), input_lengths)
    errors = sum(edit_distance(d, targets[i, :target_lengths[i]].tolist())
                 for i, d in enumerate(decoded))
    return errors / int(target_lengths.sum())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default="docs/ctc_recognizer.png")
    args = parser.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    patterns = torch.randn(DIGITS + 1, FEATURES, generator=generator) * 1.5
    held_out = make_batch(256, generator, patterns)
    model = Recognizer()
    criterion = fusedloss.nn.CTCLoss(blank=0, zero_infinity=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in trange(args.steps, desc="CTC training"):
        frames, targets, input_lengths, target_lengths = make_batch(args.batch, generator, patterns)
        optimizer.zero_grad()
        loss = criterion(model(frames), targets, input_lengths, target_lengths)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    rate = label_error_rate(model, held_out)
    print(f"loss: first step {losses[0]:.3f}, last 20 steps {sum(losses[-20:]) / 20:.3f}")
    print(f"held-out label error rate (greedy decoding): {rate:.1%}")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("CTC loss ('mean': per target label)")
    ax.set_yscale("log")
    ax.set_title(f"fusedloss.nn.CTCLoss: held-out label error rate {rate:.1%}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
