"""Generation: KV cache against recomputation, sampling controls, stop strings, streaming text, batching."""

from __future__ import annotations

import pytest
import torch

from model.config import ConfigError, resolve_hyperparameters
from model.data import prepare_corpus
from model.generate import Generator, Row, SamplingParams, advance
from model.gpt import GPT
from model.tokenizers import train_tokenizer
from model.trainer import Trainer

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eot=True)


@pytest.fixture(scope="module")
def trained(corpus, char_tokenizer):
    torch.set_num_threads(1)
    model_cfg, train_cfg = resolve_hyperparameters({"preset": "tiny", "max_iters": 150, "eval_every": 150})
    train_ids, val_ids = prepare_corpus(corpus, char_tokenizer)
    trainer = Trainer(model_cfg.with_vocab(char_tokenizer.vocab_size), train_cfg, train_ids, val_ids)
    trainer.run()
    return trainer.model.eval(), char_tokenizer


def _random_model(model_config, vocab_size, seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(model_config(vocab_size, **overrides)).eval()


@pytest.mark.parametrize("positions, new_tokens", [("rotary", 60), ("learned", 10), ("sinusoidal", 10)])
def test_kv_cache_greedy_equals_recomputation(model_config, char_tokenizer, positions, new_tokens):
    """Rotary slides its cache past the context (16 here) and still matches a cropped recomputation."""
    model = _random_model(model_config, char_tokenizer.vocab_size, positions=positions)
    params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eot=True)
    cached = Generator(model, char_tokenizer).generate("the cat", params)[0]
    recomputed = Generator(model, char_tokenizer, use_cache=False).generate("the cat", params)[0]
    assert cached.token_ids == recomputed.token_ids
    assert cached.completion_tokens == new_tokens


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_absolute_positions_generate_past_the_context(model_config, char_tokenizer, positions):
    model = _random_model(model_config, char_tokenizer.vocab_size, positions=positions)
    out = Generator(model, char_tokenizer).generate("the", SamplingParams(max_new_tokens=50, ignore_eot=True, seed=1))
    assert out[0].completion_tokens == 50 and out[0].finish_reason == "length"


def test_batched_prompts_equal_single_prompts(trained):
    model, tok = trained
    gen = Generator(model, tok)
    prompts = ["the cat", "a", "the dog ran, the"]
    batched = gen.generate(prompts, GREEDY)
    for prompt, completion in zip(prompts, batched):
        alone = gen.generate(prompt, GREEDY)[0]
        assert completion.token_ids == alone.token_ids
        assert completion.prompt_tokens == len(tok.encode(prompt))


def test_trained_model_continues_the_corpus(trained):
    model, tok = trained
    text = Generator(model, tok).generate("the cat sat on the", GREEDY)[0].text
    assert "the" in text


def test_max_new_tokens_does_not_count_the_prompt(trained):
    model, tok = trained
    out = Generator(model, tok).generate("the dog sat on the log.", SamplingParams(max_new_tokens=7,
                                                                                 ignore_eot=True, seed=0))[0]
    assert out.completion_tokens == 7 and len(out.token_ids) == 7 and out.finish_reason == "length"
    assert out.prompt_tokens == len("the dog sat on the log.")


def test_same_seed_same_text_and_other_seeds_differ(trained):
    model, tok = trained
    gen = Generator(model, tok)
    params = SamplingParams(temperature=1.5, max_new_tokens=30, seed=123, ignore_eot=True)
    a = gen.generate("the", params)[0].text
    assert gen.generate("the", params)[0].text == a
    others = {gen.generate("the", SamplingParams(temperature=1.5, max_new_tokens=30, seed=s,
                                                 ignore_eot=True))[0].text for s in range(5)}
    assert len(others) > 1


def test_num_sequences(trained):
    model, tok = trained
    out = Generator(model, tok).generate(["the", "a"], SamplingParams(temperature=1.5, max_new_tokens=20, seed=3,
                                                                     num_sequences=3, ignore_eot=True))
    assert len(out) == 6
    assert [c.prompt_index for c in out] == [0, 0, 0, 1, 1, 1]
    assert [c.sequence for c in out] == [0, 1, 2, 0, 1, 2]
    assert len({c.text for c in out[:3]}) > 1


def test_stop_string_ends_the_output_before_it(trained):
    model, tok = trained
    gen = Generator(model, tok)
    free = gen.generate("the cat", GREEDY)[0].text
    stop = free[5:8]
    out = gen.generate("the cat", SamplingParams(temperature=0.0, max_new_tokens=40, stop=["zzz", stop]))[0]
    assert out.finish_reason == "stop"
    assert out.text == free[: free.find(stop)]
    assert stop not in out.text


def test_streamed_pieces_add_up_to_the_completion(trained):
    model, tok = trained
    gen = Generator(model, tok)
    free = gen.generate("the", GREEDY)[0].text
    for stop in ([], [free[10:13]], [free[3:5], "qq"]):
        params = SamplingParams(temperature=0.0, max_new_tokens=40, stop=stop, ignore_eot=True)
        tokens = list(gen.stream("the", params))
        text = "".join(t.text for t in tokens)
        assert text == gen.generate("the", params)[0].text
        assert [t.index for t in tokens] == list(range(len(tokens)))
        assert tokens[-1].finish_reason in ("stop", "length")
        assert all(t.finish_reason is None for t in tokens[:-1])
        if stop:
            assert not any(s in text for s in stop)


def test_empty_prompt_starts_from_end_of_text(trained):
    model, tok = trained
    out = Generator(model, tok).generate("", SamplingParams(max_new_tokens=10, seed=0, ignore_eot=True))[0]
    assert out.prompt_tokens == 1 and out.completion_tokens == 10


def test_prompt_longer_than_context_is_cropped(trained):
    model, tok = trained
    prompt = "the cat sat on the mat. " * 10  # 240 characters, context 16
    out = Generator(model, tok).generate(prompt, GREEDY)[0]
    assert out.prompt_tokens == len(prompt) and out.completion_tokens == 40
    assert out.text == Generator(model, tok).generate(prompt[-16:], GREEDY)[0].text


def test_end_of_text_finishes_with_stop(model_config, char_tokenizer):
    model = _random_model(model_config, char_tokenizer.vocab_size)
    head = torch.nn.Linear(model.config.d_model, char_tokenizer.vocab_size)
    with torch.no_grad():
        head.weight.copy_(model.head.weight)
        head.bias.zero_()
        head.bias[char_tokenizer.eot_id] = 100.0  # make <|endoftext|> the likeliest token
    model.head = head
    out = Generator(model, char_tokenizer).generate("the", SamplingParams(temperature=0.0, max_new_tokens=10))[0]
    assert out.finish_reason == "stop" and out.completion_tokens == 1 and out.text == ""


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.0, max_new_tokens=20, ignore_eot=True),
                                    SamplingParams(temperature=1.0, max_new_tokens=20, ignore_eot=True, seed=3)])
def test_a_byte_level_vocabulary_never_generates_a_nul_character(model_config, params):
    """Regression: byte-level BPE has a token for every byte, NUL included, and a model could sample it; the text
    then held U+0000, which PostgreSQL cannot store, so the generation's facts were dead-lettered by the projection.
    No training text holds NUL (it is refused where text enters), so that token is never a right answer."""
    tok = train_tokenizer("bpe", "the cat sat on the mat. " * 20, vocab_size=270)
    nul = [i for i in range(tok.vocab_size) if b"\x00" in tok.token_bytes(i)]
    assert nul  # the vocabulary does hold it
    model = _random_model(model_config, tok.vocab_size)
    head = torch.nn.Linear(model.config.d_model, tok.vocab_size)
    with torch.no_grad():
        head.weight.copy_(model.head.weight)
        head.bias.zero_()
        head.bias[nul] = 100.0  # make NUL the likeliest token by far
    model.head = head
    out = Generator(model, tok).generate("the", params)[0]
    assert out.completion_tokens == 20
    assert not set(out.token_ids) & set(nul) and "\x00" not in out.text


def test_top_k_top_p_and_repetition_penalty_in_the_sampler(model_config, char_tokenizer):
    gen = Generator(_random_model(model_config, char_tokenizer.vocab_size), char_tokenizer)
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 3.0, 2.9, 2.8, 1.0, -1.0]]).repeat(200, 1)
    draws = gen._sample(logits, SamplingParams(temperature=2.0, top_k=2), None, g)
    assert set(draws.tolist()) == {1, 2}
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1]]).log().repeat(200, 1)
    draws = gen._sample(probs, SamplingParams(temperature=1.0, top_p=0.7), None, g)
    assert set(draws.tolist()) == {0, 1}
    draws = gen._sample(probs, SamplingParams(temperature=1.0, top_p=0.01), None, g)
    assert set(draws.tolist()) == {0}
    seen = torch.zeros(1, 6, dtype=torch.bool)
    seen[0, 1] = True
    one = torch.tensor([[0.0, 3.0, 2.9, 2.8, 1.0, -1.0]])
    assert gen._sample(one, SamplingParams(temperature=0.0), None, g).item() == 1
    assert gen._sample(one, SamplingParams(temperature=0.0, repetition_penalty=2.0), seen, g).item() == 2


def test_top_k_one_is_greedy(trained):
    model, tok = trained
    gen = Generator(model, tok)
    sampled = gen.generate("the", SamplingParams(temperature=1.0, top_k=1, max_new_tokens=30, seed=9,
                                                 ignore_eot=True))[0]
    assert sampled.token_ids == gen.generate("the", SamplingParams(temperature=0.0, max_new_tokens=30,
                                                                   ignore_eot=True))[0].token_ids


def test_multibyte_characters_are_emitted_whole(model_config):
    tok = train_tokenizer("bpe", "ascii only here " * 10, vocab_size=270)
    gen = Generator(_random_model(model_config, tok.vocab_size), tok)
    row = Row(0, [0], [0])
    params = SamplingParams(max_new_tokens=100)
    pieces = [advance(row, t, params, 1.0, gen.tokenizer) for t in tok.encode("a🙂é")]
    assert pieces[0] == "a"
    assert "".join(pieces) == "a🙂é"
    assert all(p in ("", "a", "🙂", "é") for p in pieces)


def test_stop_prefix_is_held_back_until_resolved(char_tokenizer, model_config):
    gen = Generator(_random_model(model_config, char_tokenizer.vocab_size), char_tokenizer)
    row = Row(0, [0], [0])
    params = SamplingParams(max_new_tokens=100, stop=["cat."])
    pieces = [advance(row, t, params, 1.0, gen.tokenizer) for t in char_tokenizer.encode("a car ca")]
    assert "".join(pieces) == "a car "  # "ca" might still become "cat."
    assert advance(row, char_tokenizer.encode("t")[0], params, 1.0, gen.tokenizer) == ""
    assert advance(row, char_tokenizer.encode(".")[0], params, 1.0, gen.tokenizer) == ""
    assert row.finish_reason == "stop" and row.text == "a car "


@pytest.mark.parametrize("field, value", [("max_new_tokens", 0), ("temperature", -1.0), ("top_k", 0),
                                          ("top_p", 0.0), ("top_p", 1.5), ("repetition_penalty", 0.0),
                                          ("stop", [""]), ("num_sequences", 0), ("temperature", float("nan"))])
def test_sampling_params_validation_names_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        SamplingParams(**{field: value})
    assert err.value.field == field


def test_sampling_follows_the_distribution(model_config, char_tokenizer):
    gen = Generator(_random_model(model_config, char_tokenizer.vocab_size), char_tokenizer)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = gen._sample(probs.log().repeat(20000, 1), SamplingParams(temperature=1.0), None,
                        torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=4) / 20000
    assert torch.allclose(frequencies, probs, atol=0.015)
