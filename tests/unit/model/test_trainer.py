"""The training loop: learning, callbacks, cancel, early stopping, and exact resume from a checkpoint."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from model.checkpoint import pack_checkpoint, unpack_checkpoint
from model.config import ConfigError, TrainConfig, resolve_hyperparameters
from model.data import BatchSampler, prepare_corpus
from model.optim import lr_multiplier, orthogonalize
from model.trainer import Callbacks, Trainer


def _setup(corpus, tokenizer, **hp):
    model_cfg, train_cfg = resolve_hyperparameters({"preset": "tiny", **hp})
    train_ids, val_ids = prepare_corpus(corpus, tokenizer, train_cfg.val_fraction)
    return model_cfg.with_vocab(tokenizer.vocab_size), train_cfg, train_ids, val_ids


def test_prepare_corpus_splits_in_order(corpus, char_tokenizer):
    train_ids, val_ids = prepare_corpus(corpus, char_tokenizer, 0.1)
    assert len(train_ids) + len(val_ids) == len(char_tokenizer.encode(corpus))
    assert abs(len(val_ids) / (len(train_ids) + len(val_ids)) - 0.1) < 0.01
    assert char_tokenizer.decode(train_ids.tolist()) + char_tokenizer.decode(val_ids.tolist()) == corpus


def test_batches_are_shifted_windows():
    ids = torch.arange(100)
    x, y = BatchSampler(ids, 4, 8, seed=0).next()
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_loss_decreases_on_a_small_corpus(corpus, char_tokenizer, optimizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=60, eval_every=60, optimizer=optimizer)
    losses, vals = [], []
    result = Trainer(m, t, tr, va, Callbacks(on_step=lambda s: losses.append(s.loss),
                                             on_validation=lambda v: vals.append(v.val_loss))).run()
    assert result.step == 60 and not result.cancelled and not result.stopped_early
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.7
    assert result.val_loss == vals[-1] < math.log(char_tokenizer.vocab_size) - 0.7


def test_tiny_preset_trains_50_iterations_quickly(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer)
    assert t.max_iters == 50
    result = Trainer(m, t, tr, va).run()
    assert result.step == 50
    assert result.wall_s < 10  # about a second on one core; generous for a busy machine
    assert result.tokens_per_s > 0


def test_callbacks_report_steps_validations_and_checkpoints(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=20, eval_every=10, checkpoint_every=5, log_every=2)
    steps, vals, ckpts = [], [], []
    Trainer(m, t, tr, va, Callbacks(on_step=steps.append, on_validation=vals.append,
                                    on_checkpoint=ckpts.append)).run()
    assert [s.step for s in steps] == [1, *range(2, 21, 2)]  # the run's first step, then every log_every
    assert all(s.lr > 0 and s.tokens_per_s > 0 and s.max_iters == 20 for s in steps)
    assert [v.step for v in vals] == [10, 20]
    assert [c.step for c in ckpts] == [5, 10, 15, 20]
    assert ckpts[-1].reason == "final"
    assert vals[0].is_best and ckpts[1].is_best


def test_should_stop_cancels_within_a_step(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=1000)
    seen, ckpts = [], []

    def stop() -> bool:
        return len(seen) >= 7

    result = Trainer(m, t, tr, va, Callbacks(on_step=seen.append, should_stop=stop,
                                             on_checkpoint=ckpts.append)).run()
    assert result.cancelled and result.step == 7
    assert ckpts[-1].reason == "cancelled" and ckpts[-1].step == 7


def test_early_stopping_stops_when_validation_stops_improving(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=400, eval_every=2, early_stopping_patience=1,
                          learning_rate=1e-6, min_lr_ratio=1.0, warmup=0, eval_iters=1)
    trainer = Trainer(m, t, tr, va)
    trainer.estimate_val_loss = lambda: 1.0  # flat validation loss: never improves after the first
    result = trainer.run()
    assert result.stopped_early and result.step == 4


def test_checkpoint_resume_gives_the_same_next_steps(corpus, char_tokenizer):
    """Stop at step 12, resume from the packed bytes: steps 13.. equal those of an uninterrupted run."""
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=20, dropout=0.1, checkpoint_every=12, eval_every=6)
    full = []
    Trainer(m, t, tr, va, Callbacks(on_step=full.append)).run()

    saved = {}
    first = []
    Trainer(m, t, tr, va, Callbacks(on_step=first.append, on_checkpoint=lambda c: saved.setdefault(c.step, c),
                                    should_stop=lambda: len(first) >= 12)).run()
    state = unpack_checkpoint(pack_checkpoint(saved[12].state))
    resumed = []
    result = Trainer(None, None, tr, va, Callbacks(on_step=resumed.append), resume=state).run()
    assert result.step == 20
    assert [s.step for s in resumed] == list(range(13, 21))
    assert [s.loss for s in resumed] == [s.loss for s in full[12:]]  # bitwise


def test_resume_with_muon_is_exact(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=10, optimizer="muon", checkpoint_every=5)
    full, first, resumed, saved = [], [], [], {}
    Trainer(m, t, tr, va, Callbacks(on_step=full.append)).run()
    Trainer(m, t, tr, va, Callbacks(on_step=first.append, on_checkpoint=lambda c: saved.setdefault(c.step, c),
                                    should_stop=lambda: len(first) >= 5)).run()
    Trainer(None, None, tr, va, Callbacks(on_step=resumed.append), resume=saved[5].state).run()
    assert [s.loss for s in resumed] == [s.loss for s in full[5:]]


def test_resume_may_extend_the_run(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=6)
    saved = []
    Trainer(m, t, tr, va, Callbacks(on_checkpoint=saved.append)).run()
    result = Trainer(None, replace(t, max_iters=9), tr, va, resume=saved[-1].state).run()
    assert result.step == 9


def test_same_seed_same_run(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=5)
    a, b = [], []
    Trainer(m, t, tr, va, Callbacks(on_step=a.append)).run()
    Trainer(m, t, tr, va, Callbacks(on_step=b.append)).run()
    assert [s.loss for s in a] == [s.loss for s in b]


def test_gradient_accumulation_runs(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=4, grad_accum=3)
    result = Trainer(m, t, tr, va).run()
    assert result.step == 4 and math.isfinite(result.train_loss)


def test_gradients_are_clipped_after_backward(corpus, char_tokenizer, monkeypatch):
    calls = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm):
        params = list(params)
        calls.append(all(p.grad is not None for p in params))
        return original(params, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    m, t, tr, va = _setup(corpus, char_tokenizer, max_iters=3, grad_clip=0.5)
    Trainer(m, t, tr, va).run()
    assert calls == [True, True, True]


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(max_iters=100, warmup=10, min_lr_ratio=0.1)
    lrs = [lr_multiplier(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)
    linear = replace(cfg, schedule="linear")
    assert lr_multiplier(55, linear) == pytest.approx(0.55)


def test_weight_decay_only_on_matrices(corpus, char_tokenizer):
    m, t, tr, va = _setup(corpus, char_tokenizer, weight_decay=0.3)
    trainer = Trainer(m, t, tr, va)
    for group in trainer.optimizers[0].param_groups:
        dims = {p.dim() for p in group["params"]}
        assert (group["weight_decay"] > 0) == (dims == {2})


def test_orthogonalize_gives_near_unit_singular_values():
    torch.manual_seed(0)
    G = torch.randn(3, 32, 16)
    s = torch.linalg.svdvals(orthogonalize(G))
    assert s.min() > 0.5 and s.max() < 1.3


def test_too_short_corpus_is_a_config_error(char_tokenizer):
    m, t = resolve_hyperparameters({"preset": "tiny"})
    with pytest.raises(ConfigError) as err:
        Trainer(m.with_vocab(char_tokenizer.vocab_size), t, torch.tensor([1]), torch.tensor([1, 2]))
    assert err.value.field == "dataset"


def test_corpus_shorter_than_context_trains_on_shorter_windows(char_tokenizer):
    m, t = resolve_hyperparameters({"preset": "tiny", "max_iters": 3})
    ids = torch.tensor(char_tokenizer.encode("the cat"))
    result = Trainer(m.with_vocab(char_tokenizer.vocab_size), t, ids, ids).run()
    assert result.step == 3
