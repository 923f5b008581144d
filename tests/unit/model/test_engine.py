"""The batching engine: greedy output equals one-at-a-time generation token for token (requests joining mid-way,
prompts longer than the context or than a step's prefill, sequences running past the context); seeded sampling
is the same whatever shares the batch; cancelled and finished requests free their slots."""

from __future__ import annotations

import threading

import pytest
import torch

from model import fast
from model.engine import Engine
from model.generate import Generator, SamplingParams, Token
from model.gpt import GPT
from model.tokenizers import train_tokenizer

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n" * 40


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer("char", TEXT)


def random_model(model_config, vocab_size: int, **overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(model_config(vocab_size, **overrides)).eval()
    with torch.no_grad():  # away from the initialisation, so that the argmax is rarely a tie
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


class Collect:
    def __init__(self):
        self.tokens: list[Token] = []
        self.ended = 0

    def __call__(self, token: Token | None) -> None:
        if token is None:
            self.ended += 1
        else:
            self.tokens.append(token)

    def ids(self, sequence: int = 0) -> list[int]:
        return [t.id for t in self.tokens if t.sequence == sequence]

    def text(self, sequence: int = 0) -> str:
        return "".join(t.text for t in self.tokens if t.sequence == sequence)


def one_at_a_time(model: GPT, tok, prompt: str, params: SamplingParams) -> list[int]:
    ids = Generator(model, tok).generate(prompt, params)[0].token_ids
    fast.disable(model)
    return ids


def drain(engine: Engine, limit: int = 10_000) -> None:
    for _ in range(limit):
        if not engine.busy:
            return
        engine.step()
    raise AssertionError("the engine did not finish")


@pytest.mark.parametrize("positions", ["rotary", "learned", "sinusoidal"])
def test_greedy_output_equals_one_at_a_time_with_requests_joining_midway(model_config, tok, positions):
    model = random_model(model_config, tok.vocab_size, positions=positions)  # context 16 (tiny)
    prompts = ["the", "a dog", "", "the cat sat on the mat. the dog sat on the log.", "met on", "x"]
    params = SamplingParams(max_new_tokens=40, temperature=0, ignore_eot=True)  # past the context
    expected = [one_at_a_time(model, tok, p, params) for p in prompts]
    engine = Engine(model, tok, slots=4, prefill_tokens=6)  # fewer slots than requests; long prompts in chunks
    got = [Collect() for _ in prompts]
    for i, prompt in enumerate(prompts):
        engine.submit(prompt, params, got[i])
        for _ in range(i * 5):  # the next one arrives while these decode
            engine.step()
    drain(engine)
    assert [g.ids() for g in got] == expected
    assert all(g.ended == 1 for g in got) and sorted(engine.free) == [0, 1, 2, 3] and not engine.active


def test_seeded_sampling_is_the_same_alone_and_in_a_crowd(model_config, tok):
    model = random_model(model_config, tok.vocab_size)
    params = SamplingParams(max_new_tokens=30, temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.3, seed=7)
    alone = one_at_a_time(model, tok, "the cat", params)
    engine = Engine(model, tok, slots=8)
    mine = Collect()
    others = [SamplingParams(max_new_tokens=n, temperature=t, top_k=k, seed=s) for n, t, k, s in
              ((5, 1.5, None, 1), (50, 0.0, None, None), (12, 0.7, 3, 2))]
    engine.submit("a dog", others[0], Collect())
    engine.step()
    engine.submit("the cat", params, mine)
    for i, p in enumerate(others[1:]):
        engine.step()
        engine.submit("met", p, Collect())
    drain(engine)
    assert mine.ids() == alone  # the same as Generator's, whose one sequence draws from the same seed


def test_each_sequence_of_a_request_and_each_ending(model_config, tok):
    model = random_model(model_config, tok.vocab_size)
    engine = Engine(model, tok, slots=8)
    several, stopped, eot = Collect(), Collect(), Collect()
    engine.submit("the", SamplingParams(max_new_tokens=7, temperature=1.0, seed=3, num_sequences=3,
                                               ignore_eot=True), several)
    engine.submit("the", SamplingParams(max_new_tokens=200, temperature=0, stop=("t",)), stopped)
    greedy = one_at_a_time(model, tok, "the", SamplingParams(max_new_tokens=50, temperature=0))
    engine.submit("the", SamplingParams(max_new_tokens=50, temperature=0), eot)
    drain(engine)
    assert several.ended == 1 and [len(several.ids(s)) for s in range(3)] == [7, 7, 7]
    assert [t.finish_reason for t in several.tokens if t.finish_reason] == ["length"] * 3
    assert len({tuple(several.ids(s)) for s in range(3)}) > 1  # three samples, not one thrice
    assert "t" not in stopped.text() and stopped.tokens[-1].finish_reason in ("stop", "length")
    assert eot.ids() == greedy and eot.tokens[-1].finish_reason == ("stop" if tok.eot_id in greedy else "length")


def test_a_cancelled_request_frees_its_slot_at_the_next_step(model_config, tok):
    model = random_model(model_config, tok.vocab_size)
    engine = Engine(model, tok, slots=2)
    first, second, waiting = Collect(), Collect(), Collect()
    a = engine.submit("the", SamplingParams(max_new_tokens=500, ignore_eot=True), first)
    engine.submit("a", SamplingParams(max_new_tokens=500, ignore_eot=True), second)
    queued = engine.submit("dog", SamplingParams(max_new_tokens=3, ignore_eot=True), waiting)
    for _ in range(5):
        engine.step()
    assert waiting.tokens == [] and len(engine.waiting) == 1  # no free slot yet
    a.cancel()
    made = len(first.tokens)
    engine.step()
    assert len(first.tokens) == made  # nothing more after the cancel
    assert len(waiting.tokens) == 1  # the freed slot took the waiting request in the same step
    queued.cancel()
    engine.step()
    assert len(waiting.tokens) == 1 and list(engine.active.values())[0].stream.prompt_ids == tok.encode("a")


def test_the_engine_thread_serves_until_stopped(model_config, tok):
    model = random_model(model_config, tok.vocab_size)
    engine = Engine(model, tok, slots=4)
    stop, done = threading.Event(), threading.Event()
    got = Collect()
    runner = threading.Thread(target=engine.run, args=(stop,))
    runner.start()
    engine.submit("the", SamplingParams(max_new_tokens=5, ignore_eot=True),
                  lambda token: done.set() if token is None else got(token))
    assert done.wait(10) and len(got.tokens) == 5
    stop.set()
    runner.join(5)
    assert not runner.is_alive()


def test_more_sequences_than_slots_is_refused_at_once(model_config, tok):
    engine = Engine(random_model(model_config, tok.vocab_size), tok, slots=2)
    got = Collect()
    stream = engine.submit("the", SamplingParams(max_new_tokens=3, num_sequences=3), got)
    assert got.ended == 1 and "num_sequences" in stream.refused and not engine.busy
