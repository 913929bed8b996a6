"""Leave-one-out split and the tensors that training and evaluation read.

For each user with items s_1 … s_n: train on s_1 … s_{n−2} (every position predicts the next item),
validate on s_{n−1} given s_1 … s_{n−2}, and test on s_n given s_1 … s_{n−1} (the test input holds the
validation item). Inputs keep the last ``max_len`` items, left-padded with 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .data import SequenceData


def left_pad(seq: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.int64)
    tail = seq[-length:]
    if len(tail):
        out[-len(tail):] = tail
    return out


@dataclass
class EvalSet:
    """One evaluation split: an input, a target, the full history to exclude, and fixed negatives."""

    name: str
    inputs: torch.Tensor       # [U, L] last max_len items before the target
    targets: torch.Tensor      # [U]
    history: list[torch.Tensor]  # every item the user had before the target (excluded from ranking)
    negatives: torch.Tensor    # [U, num_negatives] uniform items the user never interacted with (seeded)

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    data: SequenceData
    max_len: int
    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet

    @property
    def num_items(self) -> int:
        return self.data.num_items

    def train_counts(self) -> torch.Tensor:
        """Interactions per item in the training part ``[num_items + 1]`` (popularity baseline)."""
        counts = np.bincount(np.concatenate(self.train), minlength=self.num_items + 1)
        return torch.as_tensor(counts, dtype=torch.float32)


def sample_negatives(seq: np.ndarray, num_items: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct items drawn uniformly from those the user never interacted with."""
    seen = set(seq.tolist())
    if num_items - len(seen) < k:
        raise ValueError(f"a user has seen {len(seen)} of {num_items} items: fewer than {k} negatives remain")
    out: list[int] = []
    chosen: set[int] = set()
    while len(out) < k:
        for item in rng.integers(1, num_items + 1, size=2 * k).tolist():
            if item not in seen and item not in chosen:
                chosen.add(item)
                out.append(item)
                if len(out) == k:
                    break
    return np.array(out, dtype=np.int64)


def leave_one_out(data: SequenceData, max_len: int, num_negatives: int = 100, seed: int = 0) -> Split:
    """Split every sequence (at least 3 items each) into train / validation / test."""
    short = [u for u, s in enumerate(data.sequences) if len(s) < 3]
    if short:
        raise ValueError(f"{len(short)} users have fewer than 3 interactions (e.g. user index {short[0]}); "
                         "leave-one-out needs 3: filter them first")
    most_seen = max(len(set(s.tolist())) for s in data.sequences)
    room = data.num_items - most_seen
    if room < num_negatives:
        fewer = f"Use at most {room} negatives (get_profile(num_negatives={room}))" if room else "No item is left"
        raise ValueError(f"{data.name}: the sampled protocol draws {num_negatives} items a user never interacted with, "
                         f"but one user has seen {most_seen} of the {data.num_items} items. {fewer}, or use a "
                         "dataset with a larger catalogue")
    rng = np.random.default_rng(seed)
    evals = {}
    for name, cut in (("valid", 2), ("test", 1)):
        inputs = [s[:-cut] for s in data.sequences]
        targets = [s[-cut] for s in data.sequences]
        negs = [sample_negatives(s, data.num_items, num_negatives, rng) for s in data.sequences]
        evals[name] = EvalSet(
            name,
            torch.as_tensor(np.stack([left_pad(x, max_len) for x in inputs])),
            torch.as_tensor(np.array(targets)),
            [torch.as_tensor(x) for x in inputs],
            torch.as_tensor(np.stack(negs)),
        )
    train = [s[:-2] for s in data.sequences]
    return Split(data, max_len, train, evals["valid"], evals["test"])


def training_windows(train: list[np.ndarray], max_len: int, windows: str = "last") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-item targets ``[N, max_len]``, left-padded; target 0 marks positions without a label.

    ``windows="last"``: each user's most recent ``max_len + 1`` training items (the reference
    implementation). ``"all"``: the whole history cut into consecutive windows from the end, so
    items older than ``max_len`` are trained on too (one window per user when the history fits).
    """
    inputs, targets = [], []
    for s in train:
        ends = [len(s)] if windows == "last" else range(len(s), 1, -max_len)
        for end in ends:
            chunk = s[max(0, end - max_len - 1):end]
            inputs.append(left_pad(chunk[:-1], max_len))
            targets.append(left_pad(chunk[1:], max_len))
    return torch.as_tensor(np.stack(inputs)), torch.as_tensor(np.stack(targets))


def train_loader(split: Split, batch_size: int, seed: int, windows: str = "last") -> DataLoader:
    """Shuffled training windows; the shuffle is seeded so a run is repeatable."""
    inputs, targets = training_windows(split.train, split.max_len, windows)
    return DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


def calibration_sequences(split: Split, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` training windows (inputs only, no labels) for calibration and post-training quantization."""
    inputs, _ = training_windows(split.train, split.max_len)
    g = torch.Generator().manual_seed(seed)
    return inputs[torch.randperm(len(inputs), generator=g)[:n]]
