"""The one switch of the fast paths: the same parameters and state whichever paths are on, and a correct model with
none of them (removing model/fast leaves the readable network, which trains and generates)."""

from __future__ import annotations

import torch

from model import fast
from model.config import resolve_hyperparameters
from model.data import prepare_corpus
from model.generate import Generator, SamplingParams
from model.gpt import GPT
from model.trainer import Trainer


def test_enable_and_disable_change_classes_only(model_config):
    torch.manual_seed(0)
    model = GPT(model_config(30, activation="relu2"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast.enable(model, bf16=True)
    assert type(model).__name__ == "UnrolledDecodeGPT"
    assert type(model.blocks[0].attn).__name__ == "FusedCausalSelfAttention"
    assert type(model.blocks[0].attn.qkv).__name__ == "BF16Linear"
    fast.disable(model)
    assert {type(m).__module__ for m in model.modules()} <= {"model.gpt", "torch.nn.modules.linear",
                                                           "torch.nn.modules.sparse", "torch.nn.modules.normalization",
                                                           "torch.nn.modules.dropout", "torch.nn.modules.container"}
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_the_readable_network_alone_trains_and_generates_what_the_fast_one_does(corpus, char_tokenizer):
    model_cfg, train_cfg = resolve_hyperparameters({"preset": "tiny", "max_iters": 30, "activation": "relu2",
                                                    "precision": "fp32"})
    train_ids, val_ids = prepare_corpus(corpus, char_tokenizer)
    results = []
    for fast_paths in (False, True):
        trainer = Trainer(model_cfg.with_vocab(char_tokenizer.vocab_size), train_cfg, train_ids, val_ids,
                          fast_paths=fast_paths)
        result = trainer.run()
        text = Generator(trainer.model, char_tokenizer, fast_paths=fast_paths).generate(
            "the cat", SamplingParams(max_new_tokens=20, temperature=0.0))[0].text
        results.append((result.train_loss, result.val_loss, text))
    (slow_train, slow_val, slow_text), (fast_train, fast_val, fast_text) = results
    assert slow_val < 3.0  # it learned: the tiny corpus' characters are far from uniform after 30 steps
    assert abs(slow_train - fast_train) < 1e-3 and abs(slow_val - fast_val) < 1e-3
    assert slow_text == fast_text
