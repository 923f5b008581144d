"""TokenSequence: token arrays end to end (memory-mapped shards) read as one corpus, drawing exactly the batches the
same tokens in one tensor give, so that a run (and its resume) is the same whichever way its corpus is held."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import resolve_hyperparameters
from model.data import BatchSampler, TokenSequence, sequential_windows, split_tokens
from model.trainer import Callbacks, Trainer


def _memmaps(tmp_path, ids: np.ndarray, sizes: list[int], dtype=np.uint16) -> TokenSequence:
    """`ids` written as consecutive files of `sizes` tokens (the last takes the rest), memory-mapped read-only."""
    arrays, at = [], 0
    for index, size in enumerate([*sizes, len(ids) - sum(sizes)]):
        path = tmp_path / f"{index}.bin"
        ids[at:at + size].astype(dtype).tofile(path)
        arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=(size,)))
        at += size
    return TokenSequence(arrays)


@pytest.fixture
def ids() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 60_000, 1000)


def test_windows_across_array_boundaries_equal_the_tensors(tmp_path, ids):
    seq = _memmaps(tmp_path, ids, [7, 1, 300, 92])
    whole = torch.from_numpy(ids)
    assert len(seq) == 1000 and torch.equal(seq.tensor(), whole)
    for start, length in [(0, 7), (5, 10), (6, 3), (7, 1), (0, 1000), (400, 600), (999, 1), (300, 0)]:
        assert np.array_equal(seq.window(start, length), ids[start:start + length])
    starts = torch.tensor([0, 5, 6, 7, 8, 300, 307, 399, 400, 990])
    got = seq.gather(starts, 10)
    assert got.dtype == torch.int64 and got.shape == (10, 10)
    assert torch.equal(got, whole[starts[:, None] + torch.arange(10)])
    with pytest.raises(IndexError):
        seq.window(995, 6)


def test_views_share_memory_and_split_as_prepare_corpus(tmp_path, ids):
    seq = _memmaps(tmp_path, ids, [100, 250])
    part = seq.view(90, 420)
    assert len(part) == 330 and torch.equal(part.tensor(), torch.from_numpy(ids[90:420]))
    assert np.shares_memory(part.window(20, 5), seq.arrays[1])  # no copy within one array
    assert len(seq.view(350, 350)) == 0
    train, val = split_tokens(seq, 0.1)
    t_train, t_val = split_tokens(torch.from_numpy(ids), 0.1)
    assert torch.equal(train.tensor(), t_train) and torch.equal(val.tensor(), t_val)
    assert len(train) == int(1000 * 0.9)


def test_windows_are_read_only(ids):
    seq = TokenSequence([ids[:10], ids[10:]])
    with pytest.raises(ValueError):
        seq.window(0, 5)[0] = 1
    assert ids.flags.writeable  # the caller's array is left as it was


def test_sampler_draws_the_same_batches_as_from_the_tensor(tmp_path, ids):
    seq = _memmaps(tmp_path, ids, [64, 200, 3, 500])
    a = BatchSampler(seq, 8, 16, seed=3)
    b = BatchSampler(torch.from_numpy(ids), 8, 16, seed=3)
    for _ in range(20):
        (xa, ya), (xb, yb) = a.next(), b.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.dtype == xb.dtype == torch.int64


def test_resumed_sampler_continues_with_the_next_batches(tmp_path, ids):
    seq = _memmaps(tmp_path, ids, [128, 128, 128])
    full = BatchSampler(seq, 4, 32, seed=1)
    batches = [full.next() for _ in range(10)]
    first = BatchSampler(seq, 4, 32, seed=1)
    for _ in range(6):
        first.next()
    resumed = BatchSampler(seq, 4, 32, seed=99)
    resumed.load_state(first.state())
    for x, y in batches[6:]:
        rx, ry = resumed.next()
        assert torch.equal(rx, x) and torch.equal(ry, y)


def test_sequential_windows_are_the_same(tmp_path, ids):
    seq = _memmaps(tmp_path, ids, [50, 333])
    got = list(sequential_windows(seq, 24, 5))
    want = list(sequential_windows(torch.from_numpy(ids), 24, 5))
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want):
        assert torch.equal(gx, wx) and torch.equal(gy, wy)


def _shards(tmp_path, corpus, tokenizer, val_fraction):
    """The corpus as tokenized shards of 500 tokens, split like prepare_corpus splits it."""
    ids = np.asarray(tokenizer.encode(corpus))
    return split_tokens(_memmaps(tmp_path, ids, [500] * (len(ids) // 500)), val_fraction)


def _config(tokenizer, **hp):
    model_cfg, train_cfg = resolve_hyperparameters({"preset": "tiny", **hp})
    return model_cfg.with_vocab(tokenizer.vocab_size), train_cfg


def test_trainer_on_shards_gives_the_tensors_losses(tmp_path, corpus, char_tokenizer):
    m, t = _config(char_tokenizer, max_iters=8, eval_every=4, dropout=0.1)
    ids = torch.tensor(char_tokenizer.encode(corpus))
    on_tensor, on_shards = ([], []), ([], [])
    for (steps, vals), (tr, va) in [(on_tensor, split_tokens(ids, t.val_fraction)),
                                    (on_shards, _shards(tmp_path, corpus, char_tokenizer, t.val_fraction))]:
        Trainer(m, t, tr, va, Callbacks(on_step=steps.append, on_validation=vals.append), device="cpu").run()
    assert [s.loss for s in on_shards[0]] == [s.loss for s in on_tensor[0]]  # bitwise
    assert [v.val_loss for v in on_shards[1]] == [v.val_loss for v in on_tensor[1]]


def test_resumed_trainer_on_shards_ends_as_an_uninterrupted_run(tmp_path, corpus, char_tokenizer):
    m, t = _config(char_tokenizer, max_iters=12, eval_every=6, dropout=0.1)
    tr, va = _shards(tmp_path, corpus, char_tokenizer, t.val_fraction)
    full, first, resumed = [], [], []
    uninterrupted = Trainer(m, t, tr, va, Callbacks(on_step=full.append), device="cpu")
    uninterrupted.run()

    stopped = Trainer(m, t, tr, va, Callbacks(on_step=first.append, should_stop=lambda: len(first) >= 5), device="cpu")
    stopped.run()
    assert stopped.step == 5
    state = stopped.state()
    again = Trainer(None, None, tr, va, Callbacks(on_step=resumed.append), device="cpu", resume=state)
    result = again.run()
    assert result.step == 12
    assert [s.loss for s in resumed] == [s.loss for s in full[5:]]
    for name, value in uninterrupted.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name
