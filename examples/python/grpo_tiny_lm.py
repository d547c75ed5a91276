"""Trains a tiny language model with GRPO (TRL's group-relative policy optimisation) to count:
after a prompt token p, a completion scores the share of its tokens that follow their predecessor
by +1 (mod the vocabulary), so the best completion of p is p+1, p+2, .... A randomly initialised
model scores about 1/16. Each step samples a group of completions per prompt, turns the group's
rewards into advantages (reward minus the group's mean, over its std), and takes one gradient
step of fusedloss.functional.linear_grpo_loss on the LM head's hidden states, with a KL penalty
to the initial model, whose per-token log-probabilities come from linear_log_probs. No (B, T, V)
logits are built for the loss. Prints the mean reward, and plots it with the loss (on policy the
advantage term's value is 0, so the loss shows the KL penalty growing as the policy learns).

    python examples/python/grpo_tiny_lm.py [--steps 150] [--out docs/grpo_tiny_lm.png]

Needs matplotlib and tqdm (pip install matplotlib tqdm).
"""

import argparse
import copy

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import trange  # noqa: E402

import fusedloss  # noqa: E402

VOCAB = 16
COMPLETION = 8
PROMPTS = 16  # per step
GROUP = 8  # completions per prompt


class TinyLM(torch.nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, hidden)
        self.rnn = torch.nn.GRU(hidden, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, VOCAB, bias=False)

    def hidden_states(self, tokens, state=None):  # (B, T) -> (B, T, H), the head's input
        out, state = self.rnn(self.embed(tokens), state)
        return out, state

    @torch.no_grad()
    def sample(self, prompts, generator):
        """COMPLETION tokens after each prompt token, drawn from softmax(logits)."""
        tokens, state, out = [prompts], None, []
        for _ in range(COMPLETION):
            h, state = self.hidden_states(tokens[-1][:, None], state)
            probs = torch.softmax(self.head(h[:, -1]), dim=-1)
            tokens.append(torch.multinomial(probs, 1, generator=generator)[:, 0])
            out.append(tokens[-1])
        return torch.stack(out, dim=1)


def rewards(prompts, completions):
    previous = torch.cat([prompts[:, None], completions[:, :-1]], dim=1)
    return (completions == (previous + 1) % VOCAB).float().mean(dim=1)


def train(steps, seed=0, progress=True):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    policy = TinyLM()
    reference = copy.deepcopy(policy).requires_grad_(False)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    history = {"reward": [], "loss": []}
    bar = trange(steps, disable=not progress)
    for _ in bar:
        prompts = torch.randint(VOCAB, (PROMPTS,), generator=generator).repeat_interleave(GROUP)
        completions = policy.sample(prompts, generator)
        reward = rewards(prompts, completions)
        grouped = reward.view(PROMPTS, GROUP)
        advantages = ((grouped - grouped.mean(1, keepdim=True))
                      / (grouped.std(1, keepdim=True) + 1e-4)).reshape(-1)
        # The model reads the prompt and all but the last completion token; position i predicts
        # completion token i.
        inputs = torch.cat([prompts[:, None], completions[:, :-1]], dim=1)
        mask = torch.ones_like(completions, dtype=torch.bool)
        with torch.no_grad():
            ref_hidden, _ = reference.hidden_states(inputs)
            ref_logps = fusedloss.functional.linear_log_probs(ref_hidden, reference.head.weight,
                                                              completions)
        hidden, _ = policy.hidden_states(inputs)
        loss = fusedloss.functional.linear_grpo_loss(
            hidden, policy.head.weight, completions, advantages, mask,
            ref_per_token_logps=ref_logps, beta=0.04, loss_type="dapo")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["reward"].append(reward.mean().item())
        history["loss"].append(loss.item())
        bar.set_postfix(reward=f"{history['reward'][-1]:.2f}")
    return history


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default=None, help="where to save the plot (PNG)")
    args = parser.parse_args()
    history = train(args.steps)
    first = sum(history["reward"][:10]) / 10
    last = sum(history["reward"][-10:]) / 10
    print(f"mean reward: first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    if args.out:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        left.plot(history["reward"])
        left.set_xlabel("step")
        left.set_ylabel("mean reward (share of +1 steps)")
        right.plot(history["loss"])
        right.set_xlabel("step")
        # On policy the ratio is 1 and the advantages of a group sum to 0: the loss's value is
        # the KL penalty, which grows as the policy leaves the initial model.
        right.set_ylabel("linear_grpo_loss (= 0.04 KL to the start)")
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
