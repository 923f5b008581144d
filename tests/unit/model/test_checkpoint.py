"""Checkpoint bytes: round trip, checksum verification, safe loading, and loading a model for inference."""

from __future__ import annotations

import pytest
import torch

from model import fast

from model.checkpoint import CorruptCheckpoint, MAGIC, load_model, pack_checkpoint, unpack_checkpoint
from model.config import resolve_hyperparameters
from model.data import prepare_corpus
from model.trainer import Callbacks, Trainer


@pytest.fixture(scope="module")
def checkpoint(corpus, char_tokenizer):
    torch.set_num_threads(1)
    model_cfg, train_cfg = resolve_hyperparameters({"preset": "tiny", "max_iters": 5})
    train_ids, val_ids = prepare_corpus(corpus, char_tokenizer)
    saved = []
    trainer = Trainer(model_cfg.with_vocab(char_tokenizer.vocab_size), train_cfg, train_ids, val_ids,
                      Callbacks(on_checkpoint=saved.append), tokenizer=char_tokenizer)
    trainer.run()
    return trainer, saved[-1].state


def test_round_trip(checkpoint):
    trainer, state = checkpoint
    data = pack_checkpoint(state)
    assert data.startswith(MAGIC)
    again = unpack_checkpoint(data)
    assert again["step"] == state["step"] == 5
    assert again["model_config"] == state["model_config"]
    assert again["tokenizer"] == state["tokenizer"]
    assert again["best_val_loss"] == state["best_val_loss"]
    for key, tensor in state["model"].items():
        assert torch.equal(again["model"][key], tensor)


def test_checkpoint_holds_everything_to_resume(checkpoint):
    _, state = checkpoint
    for key in ("model", "optimizers", "step", "model_config", "train_config", "tokenizer", "best_val_loss", "rng"):
        assert key in state
    assert set(state["rng"]) >= {"sampler", "torch"}


def test_truncated_bytes_are_detected(checkpoint):
    data = pack_checkpoint(checkpoint[1])
    for cut in (0, 10, 47, len(data) // 2, len(data) - 1):
        with pytest.raises(CorruptCheckpoint):
            unpack_checkpoint(data[:cut])


def test_flipped_bit_is_detected(checkpoint):
    data = bytearray(pack_checkpoint(checkpoint[1]))
    data[len(data) // 2] ^= 0x01
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        unpack_checkpoint(bytes(data))


def test_foreign_bytes_are_rejected():
    with pytest.raises(CorruptCheckpoint, match="magic"):
        unpack_checkpoint(b"PK\x03\x04" + b"\x00" * 100)


class _Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_loading_is_weights_only(capsys):
    # Intact bytes whose pickle would call a function: refused, never executed.
    data = pack_checkpoint({"format": 1, "payload": _Sneaky()})
    with pytest.raises(CorruptCheckpoint):
        unpack_checkpoint(data)
    assert "must never run" not in capsys.readouterr().out


def test_load_model_gives_the_trained_network_and_tokenizer(checkpoint, char_tokenizer):
    trainer, state = checkpoint
    model, tokenizer = load_model(unpack_checkpoint(pack_checkpoint(state)))
    assert not model.training
    assert tokenizer.to_json() == char_tokenizer.to_json()
    idx = torch.tensor([char_tokenizer.encode("the cat sat")])
    trainer.model.eval()
    fast.disable(trainer.model)  # the loaded network is the readable one, until something enables the fast paths
    assert torch.equal(model(idx)[0], trainer.model(idx)[0])


def test_tied_weights_are_stored_once(checkpoint):
    _, state = checkpoint
    assert state["model"]["head.weight"] is state["model"]["tok_emb.weight"]
