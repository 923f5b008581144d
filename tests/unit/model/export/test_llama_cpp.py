"""The GGUF export, run by llama.cpp itself (llama-cpp-python, built from its PyPI source by `make install`): the
same token ids from its tokenizer, the same logits within llama.cpp's own rounding, the same 50 greedy tokens.

llama.cpp's CPU GELU reads a table indexed by the input rounded to float16 and returns a float16, so even a float32
file with `activation: gelu_tanh` (llama.cpp's formula) gives logits about 1e-3 from ours; the file itself is exact
(test_gguf.py runs it through a float32 reference of the same graphs to 1e-6). The bounds below are that rounding,
not slack: a wrong layout or rotation is off by whole units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from llama_cpp import Llama

from model.export.gguf import gguf_bytes
from model.generate import Generator, SamplingParams
from model.tokenizers import tokenizer_from_json
from tests.unit.model.export.test_hf import TEXT, checkpoint


def run(path: Path, ids: list[int]) -> tuple[Llama, np.ndarray]:
    # keys and values kept in float32 (llama.cpp keeps them in float16 unless told): the comparison is of the graph
    llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1, seed=0, type_k=0, type_v=0)
    llm.eval(ids)
    return llm, np.array(llm.scores[:len(ids)])


@pytest.mark.parametrize(("activation", "dtype", "bound"), [("gelu_tanh", "float32", 4e-3),
                                                             ("gelu", "float32", 5e-3), ("gelu_tanh", "float16", 1e-2)])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_llama_cpp_runs_the_export_as_we_do(tmp_path, positions, activation, dtype, bound):
    state, ours = checkpoint(positions, "bpe", activation=activation, qk_gain=1.3, tie_embeddings=False, bias=True)
    path = tmp_path / "model.gguf"
    path.write_bytes(gguf_bytes(state, dtype))
    tokenizer = tokenizer_from_json(state["tokenizer"])
    sample = TEXT[3000:3400]
    ids = tokenizer.encode(sample)[:48]
    llm, theirs = run(path, ids)
    assert llm.tokenize(sample.encode(), add_bos=False, special=False)[:48] == ids
    with torch.no_grad():
        mine = ours(torch.tensor([ids]))[0][0].numpy()
    assert np.abs(theirs - mine).max() < bound

    # 50 greedy tokens: each of llama.cpp's choices is ours, but for a near tie that its rounding may decide
    # either way (then our logit of its choice is within the rounding of our best).
    prompt = ids[:12]
    llm.reset()
    generated = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        generated.append(token)
        if len(generated) == 50:
            break
    with torch.no_grad():
        logits = ours(torch.tensor([prompt + generated]))[0][0, len(prompt) - 1:-1]  # (50, V): before each choice
    chosen = logits.gather(1, torch.tensor(generated)[:, None])[:, 0]
    assert (logits.max(dim=1).values - chosen).max().item() < 2 * bound
    greedy = Generator(ours, tokenizer).generate(tokenizer.decode(prompt), SamplingParams(
        max_new_tokens=50, temperature=0, ignore_eot=True))[0].token_ids
    ties = (torch.topk(logits, 2).values.diff(dim=1).abs()[:, 0] < 2 * bound).nonzero()
    agree = len(greedy) if greedy == generated else next(i for i, (a, b) in enumerate(zip(greedy, generated)) if a != b)
    assert greedy == generated or (ties.numel() and agree >= ties[0].item())
