"""Leave-one-out split, padding, training windows and negatives."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from sasrec_nb.data import SequenceData, synthetic
from sasrec_nb.loaders import (calibration_sequences, leave_one_out, left_pad, train_loader,
                               training_windows)

MAX_LEN = 12




@pytest.fixture(scope="module")
def data():
    return synthetic(num_users=80, num_items=200, mean_len=18, seed=1)


@pytest.fixture(scope="module")
def split(data):
    return leave_one_out(data, MAX_LEN, num_negatives=100, seed=0)


def distinct_data(lengths, num_items=400, seed=0) -> SequenceData:
    """Sequences whose items are distinct within each user: a position is identified by its item."""
    rng = np.random.default_rng(seed)
    seqs = [rng.permutation(num_items)[:n] + 1 for n in lengths]
    ids = np.array([""] + [str(k) for k in range(1, num_items + 1)], dtype=object)
    return SequenceData("distinct", [s.astype(np.int64) for s in seqs], num_items, ids)


def expected_padded(items: np.ndarray, length: int) -> list[int]:
    tail = list(items[-length:]) if len(items) else []
    return [0] * (length - len(tail)) + [int(x) for x in tail]


def test_lengths_cover_both_truncation_and_padding(data):
    # the fixture must exercise both cases, or the padding tests below prove little
    lengths = [len(s) - 2 for s in data.sequences]
    assert min(lengths) < MAX_LEN < max(lengths)


def test_valid_and_test_inputs_and_targets(data, split):
    for u, s in enumerate(data.sequences):
        assert split.valid.targets[u].item() == s[-2]
        assert split.test.targets[u].item() == s[-1]
        assert split.valid.inputs[u].tolist() == expected_padded(s[:-2], MAX_LEN)
        assert split.test.inputs[u].tolist() == expected_padded(s[:-1], MAX_LEN)
        assert split.valid.history[u].tolist() == s[:-2].tolist()  # full history, not truncated
        assert split.test.history[u].tolist() == s[:-1].tolist()
    assert len(split.valid) == len(split.test) == data.num_users
    assert split.valid.inputs.shape == split.test.inputs.shape == (data.num_users, MAX_LEN)


def test_validation_item_is_last_test_input(split):
    assert torch.equal(split.test.inputs[:, -1], split.valid.targets)
    # and the input rolls by one: test input without its last item is the tail of the valid input
    assert torch.equal(split.test.inputs[:, :-1], split.valid.inputs[:, 1:])


def test_target_is_not_in_its_own_input_positions():
    data = distinct_data([3, 4, 7, 12, 13, 14, 30])
    split = leave_one_out(data, MAX_LEN, num_negatives=10)
    for ev in (split.valid, split.test):
        for u in range(len(ev)):
            assert ev.targets[u].item() not in ev.inputs[u].tolist()
            assert ev.targets[u].item() not in ev.history[u].tolist()
    # the test target is not in the valid input either
    for u in range(len(split.test)):
        assert split.test.targets[u].item() not in split.valid.inputs[u].tolist()


def test_left_pad_keeps_most_recent():
    assert left_pad(np.array([1, 2, 3]), 5).tolist() == [0, 0, 1, 2, 3]
    assert left_pad(np.array([1, 2, 3, 4, 5, 6]), 4).tolist() == [3, 4, 5, 6]
    assert left_pad(np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]


def test_train_part_excludes_valid_and_test(data, split):
    for s, t in zip(data.sequences, split.train):
        assert t.tolist() == s[:-2].tolist()


@pytest.mark.parametrize("windows", ["last", "all"])
def test_training_windows_never_hold_valid_or_test_items(windows):
    data = distinct_data([3, 4, 5, 13, 14, 15, 27, 40])
    split = leave_one_out(data, MAX_LEN, num_negatives=10)
    for s, train in zip(data.sequences, split.train):
        if len(train) < 2:  # no transition to train on (checked in the coverage test)
            continue
        inputs, targets = training_windows([train], MAX_LEN, windows)
        seen = set(inputs.flatten().tolist()) | set(targets.flatten().tolist())
        assert s[-1] not in seen and s[-2] not in seen
        assert seen - {0} <= set(train.tolist())


def positions_of(inputs, targets, seq) -> list[tuple[int, int]]:
    """Transitions (index of input item, index of target item) in a sequence of distinct items."""
    where = {int(x): k for k, x in enumerate(seq)}
    out = []
    for x_row, y_row in zip(inputs.tolist(), targets.tolist()):
        for x, y in zip(x_row, y_row):
            if y:
                out.append((where[x], where[y]))
    return out


def test_all_windows_cover_every_training_transition_exactly_once():
    lengths = [1, 2, 3, MAX_LEN, MAX_LEN + 1, MAX_LEN + 2, 2 * MAX_LEN, 2 * MAX_LEN + 1, 3 * MAX_LEN + 5]
    data = distinct_data(lengths)
    total = 0
    for s in data.sequences:
        if len(s) < 2:  # a single item has no transition: no window (asserted through the total below)
            continue
        inputs, targets = training_windows([s], MAX_LEN, "all")
        assert inputs.shape[1] == targets.shape[1] == MAX_LEN
        pos = positions_of(inputs, targets, s)
        assert Counter(pos) == Counter((k, k + 1) for k in range(len(s) - 1))
        # one window per user when the history fits
        if 1 < len(s) <= MAX_LEN + 1:
            assert len(inputs) == 1
        total += len(inputs)
    both, _ = training_windows(data.sequences, MAX_LEN, "all")
    assert len(both) == total


def test_all_windows_on_synthetic_data_cover_every_transition(split):
    inputs, targets = training_windows(split.train, MAX_LEN, "all")
    got = Counter()
    for x_row, y_row in zip(inputs.tolist(), targets.tolist()):
        got.update((x, y) for x, y in zip(x_row, y_row) if y)
    want = Counter()
    for t in split.train:
        want.update(zip(t[:-1].tolist(), t[1:].tolist()))
    assert got == want


def test_last_window_is_the_reference(split):
    inputs, targets = training_windows(split.train, MAX_LEN, "last")
    assert inputs.shape == targets.shape == (len(split.train), MAX_LEN)
    for u, t in enumerate(split.train):
        chunk = t[-(MAX_LEN + 1):]
        assert inputs[u].tolist() == expected_padded(chunk[:-1], MAX_LEN)
        assert targets[u].tolist() == expected_padded(chunk[1:], MAX_LEN)
        assert targets[u, -1].item() == t[-1]
    # padding positions carry no label, labelled positions have an input
    assert torch.equal(inputs == 0, targets == 0)


def test_train_loader_is_seeded(split):
    first = lambda seed: next(iter(train_loader(split, 16, seed)))[0]  # noqa: E731
    assert torch.equal(first(3), first(3))
    assert not torch.equal(first(3), first(4))
    total = sum(len(x) for x, _ in train_loader(split, 16, 0))
    assert total == len(split.train)


def test_calibration_sequences(split):
    a = calibration_sequences(split, 20, seed=0)
    assert a.shape == (20, MAX_LEN)
    assert torch.equal(a, calibration_sequences(split, 20, seed=0))
    assert not torch.equal(a, calibration_sequences(split, 20, seed=1))
    windows = {tuple(r) for r in training_windows(split.train, MAX_LEN)[0].tolist()}
    assert all(tuple(r) in windows for r in a.tolist())


@pytest.mark.parametrize("which", ["valid", "test"])
def test_negatives_are_distinct_unseen_and_seeded(data, split, which):
    negs = getattr(split, which).negatives
    assert negs.shape == (data.num_users, 100)
    for u, s in enumerate(data.sequences):
        row = negs[u].tolist()
        assert len(set(row)) == 100
        assert not set(row) & set(s.tolist())  # never interacted with, targets included
        assert min(row) >= 1 and max(row) <= data.num_items
    same = getattr(leave_one_out(data, MAX_LEN, seed=0), which).negatives
    other = getattr(leave_one_out(data, MAX_LEN, seed=1), which).negatives
    assert torch.equal(negs, same)
    assert not torch.equal(negs, other)


def test_too_few_negatives_raise():
    data = distinct_data([3, 10], num_items=50)
    with pytest.raises(ValueError, match=r"one user has seen 10 of the 50 items\. Use at most 40 negatives"):
        leave_one_out(data, MAX_LEN, num_negatives=100)


def test_users_with_fewer_than_3_items_raise():
    data = distinct_data([5, 2, 6])
    with pytest.raises(ValueError, match="fewer than 3") as err:
        leave_one_out(data, MAX_LEN, num_negatives=10)
    assert "user index 1" in str(err.value)
    leave_one_out(distinct_data([5, 3, 6]), MAX_LEN, num_negatives=10)  # 3 is enough


def test_train_counts(split):
    counts = split.train_counts()
    assert counts.shape == (split.num_items + 1,)
    assert counts[0] == 0
    assert counts.sum().item() == sum(len(t) for t in split.train)


def test_a_catalogue_too_small_for_the_negatives_says_how_to_proceed():
    from sasrec_nb.data import build_sequences

    data = build_sequences([(u, str(i), t) for u in "abcd" for t, i in enumerate(range(1, 9))], "tiny", min_count=1)
    with pytest.raises(ValueError, match=r"one user has seen 8 of the 8 items\. No item is left, or use a dataset"):
        leave_one_out(data, 5, num_negatives=100)
    few = build_sequences([(u, str(i), t) for u in "abcd" for t, i in enumerate(range(1, 9))]
                          + [("e", str(i), t) for t, i in enumerate(range(7, 10))], "few", min_count=1)
    with pytest.raises(ValueError, match=r"Use at most 1 negatives \(get_profile\(num_negatives=1\)\)"):
        leave_one_out(few, 5, num_negatives=100)
