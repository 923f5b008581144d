"""Text generation: a generator that yields one token at a time (what a streaming endpoint needs), with a KV cache.

Sampling: temperature (0 = greedy), top-k, top-p, repetition penalty, stop strings (the output ends before the
stop string, which is not included), end-of-text, a seed (same seed, same text), several sequences per prompt and
several prompts per batch (left-padded). Text is emitted only once it decodes to whole characters, and text that
could be the start of a stop string is held back until it is known not to be.

Prompts longer than the context are cropped from the left; generation may run past the context length: with
rotary positions the cache slides as a ring, with absolute positions it is refilled from the last 3/4 context.
"""

from __future__ import annotations

import codecs
import math
import random
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch.nn import functional as F

from model import fast
from model.config import ConfigError
from model.device import autocast
from model.gpt import GPT
from model.tokenizers import Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64  # new tokens, not counting the prompt
    temperature: float = 0.8  # 0 means greedy
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or the output
    stop: tuple[str, ...] = ()
    seed: int | None = None
    num_sequences: int = 1
    ignore_eot: bool = False  # keep going past <|endoftext|> (benchmarks)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            ("max_new_tokens", isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "an integer >= 1"),
            ("temperature", _number(self.temperature) and self.temperature >= 0, "a number >= 0"),
            ("top_k", self.top_k is None or (isinstance(self.top_k, int) and self.top_k >= 1), "an integer >= 1"),
            ("top_p", _number(self.top_p) and 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("repetition_penalty", _number(self.repetition_penalty) and self.repetition_penalty > 0, "a number > 0"),
            ("stop", all(isinstance(s, str) and s for s in self.stop), "a list of non-empty strings"),
            ("seed", self.seed is None or isinstance(self.seed, int), "an integer"),
            ("num_sequences", isinstance(self.num_sequences, int) and self.num_sequences >= 1, "an integer >= 1"),
        ]
        for name, ok, expected in checks:
            if not ok or isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be {expected}, got {getattr(self, name)!r}")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    text: str  # the new text this token completes ("" while held back: partial character or possible stop string)
    index: int  # 0-based position in the completion
    sequence: int  # which sequence of the batch
    finish_reason: str | None = None  # "stop" or "length" on the sequence's last token


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-text or a stop string) or "length"
    ttft_ms: float  # from the call to the first token
    total_ms: float
    tokens_per_s: float
    prompt_index: int = 0
    sequence: int = 0


@dataclass
class Row:
    """One sequence being generated: its text so far and what has been yielded (also model/engine.py's)."""

    prompt_index: int
    prompt_ids: list[int]
    history: list[int]  # the (cropped) prompt and everything generated, for refills and the no-cache path
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    generated: list[int] = field(default_factory=list)
    text: str = ""  # decoded so far, stop strings not yet cut
    emitted: int = 0  # characters of `text` already yielded
    finish_reason: str | None = None
    first_at: float = 0.0
    done_at: float = 0.0


def _held_back(text: str, start: int, stops: tuple[str, ...]) -> int:
    """Length of the longest end of text[start:] that could begin a stop string."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text) - start), longest, -1):
            if s.startswith(text[len(text) - k:]):
                longest = k
                break
    return longest


def advance(row: Row, token: int, params: SamplingParams, now: float, tokenizer: Tokenizer) -> str:
    """Record one generated token; returns the text it releases and sets finish_reason when the row ends."""
    row.generated.append(token)
    row.history.append(token)
    if not row.first_at:
        row.first_at = now
    if token == tokenizer.eot_id and not params.ignore_eot:
        row.finish_reason = "stop"
        row.text += row.decoder.decode(b"", final=True)
    else:
        row.text += row.decoder.decode(tokenizer.token_bytes(token))
        if params.stop:
            hits = [i for i in (row.text.find(s, row.emitted) for s in params.stop) if i >= 0]
            if hits:
                row.text, row.finish_reason = row.text[:min(hits)], "stop"
        if row.finish_reason is None and len(row.generated) >= params.max_new_tokens:
            row.text += row.decoder.decode(b"", final=True)
            row.finish_reason = "length"
    end = len(row.text)
    if row.finish_reason is None:
        end -= _held_back(row.text, row.emitted, params.stop)
    piece, row.emitted = row.text[row.emitted:end], end
    if row.finish_reason is not None:
        row.done_at = now
    return piece


class Generator:
    """Generation from one model. On a CPU, single sequences decode fastest with torch.set_num_threads(1)."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, device: torch.device | str | None = None,
                 use_cache: bool = True, fast_paths: bool = True):
        if device is not None:
            model.to(device)
        self.model = (fast.enable(model) if fast_paths else model).eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.use_cache = use_cache
        self.context = model.config.context_length
        self.ring = model.config.positions == "rotary"
        # Tokens that would put a NUL character (U+0000) in the text: a byte-level vocabulary has one for every byte,
        # but no training text holds NUL (the system refuses it where text enters: PostgreSQL stores none), so they
        # are never a right answer, and are never sampled.
        self.never = torch.tensor([i for i in range(tokenizer.vocab_size) if b"\x00" in tokenizer.token_bytes(i)],
                                  dtype=torch.long, device=self.device)

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[Token]:
        """Tokens of one prompt as they are produced (num_sequences interleaved, told apart by Token.sequence)."""
        yield from self._run([prompt], params or SamplingParams(), rows_out=None)

    def generate(self, prompts: str | Sequence[str], params: SamplingParams | None = None) -> list[Completion]:
        """Completions of every prompt, num_sequences each, prompt-major, all generated as one batch."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        params = params or SamplingParams()
        rows: list[Row] = []
        start = time.perf_counter()
        for _ in self._run(prompts, params, rows_out=rows):
            pass
        out = []
        for i, r in enumerate(rows):
            total = r.done_at - start
            out.append(Completion(r.text, r.generated, len(r.prompt_ids), len(r.generated), r.finish_reason,
                                  (r.first_at - start) * 1000, total * 1000, len(r.generated) / max(total, 1e-9),
                                  r.prompt_index, i % params.num_sequences))
        return out

    # -- internals ---------------------------------------------------------------------------------------------

    def _forward(self, idx: torch.Tensor, cache) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device):
            logits, _ = self.model(idx, cache=cache, last_only=True)
        return logits[:, -1].float()  # (B, V)

    def _prefill(self, rows: list[Row], cache, keep: int) -> torch.Tensor:
        """Fill an empty cache with the last `keep` tokens of every row (left-padded); -> next-token logits."""
        windows = [r.history[-keep:] for r in rows]
        width = max(len(w) for w in windows)
        pad = torch.tensor([width - len(w) for w in windows])
        idx = torch.tensor([[self.tokenizer.pad_id] * (width - len(w)) + w for w in windows], device=self.device)
        cache.reset(pad)
        return self._forward(idx, cache)

    def _sample(self, logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None,
                generator: torch.Generator) -> torch.Tensor:
        """logits (B, V) -> next ids (B,)."""
        if self.never.numel():
            logits = logits.index_fill(-1, self.never, -math.inf)
        if seen is not None:
            penalised = torch.where(logits > 0, logits / params.repetition_penalty,
                                    logits * params.repetition_penalty)
            logits = torch.where(seen, penalised, logits)
        if params.temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits / params.temperature
        if params.top_k is not None and params.top_k < logits.size(-1):
            kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, -math.inf)
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = F.softmax(sorted_logits, dim=-1)
            # Drop a token when the tokens ranked above it already reach top_p (the first one always stays).
            drop = probs.cumsum(dim=-1) - probs >= params.top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -math.inf))
        probs = F.softmax(logits, dim=-1)
        # An exponential race: argmax(p_i / E_i) with E_i ~ Exp(1) draws i with probability p_i, in a few
        # elementwise kernels (torch.multinomial costs several times more per token on a CPU).
        race = torch.empty_like(probs).exponential_(1.0, generator=generator).clamp_min_(1e-30)  # never 0 / 0
        return (probs / race).argmax(dim=-1)

    def _run(self, prompts: list[str], params: SamplingParams, rows_out: list[Row] | None) -> Iterator[Token]:
        tok = self.tokenizer
        rows = rows_out if rows_out is not None else []
        for i, prompt in enumerate(prompts):
            ids = tok.encode(prompt) or [tok.eot_id]  # an empty prompt starts a new document
            for _ in range(params.num_sequences):
                rows.append(Row(i, ids, ids[-self.context:]))
        B, V = len(rows), self.model.config.vocab_size
        seed = params.seed if params.seed is not None else random.randrange(2**63)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(B, V, dtype=torch.bool, device=self.device)
            for b, r in enumerate(rows):
                seen[b, torch.tensor(r.prompt_ids, device=self.device)] = True
        cache = self.model.new_cache(B, self.device, torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        logits = self._prefill(rows, cache, self.context)
        refill_keep = max(1, self.context - self.context // 4)
        while True:
            next_ids = self._sample(logits, params, seen, generator)
            now = time.perf_counter()
            ids = next_ids.tolist()
            for b, (row, token) in enumerate(zip(rows, ids)):
                if row.finish_reason is None:
                    piece = advance(row, token, params, now, self.tokenizer)
                    yield Token(token, piece, len(row.generated) - 1, b, row.finish_reason)
            if all(r.finish_reason is not None for r in rows):
                return
            if seen is not None:
                seen[torch.arange(B, device=self.device), next_ids] = True
            with torch.inference_mode():
                if not self.use_cache:
                    logits = self._prefill(rows, cache, self.context)
                elif cache.full and not self.ring:
                    logits = self._prefill(rows, cache, refill_keep)
                else:
                    with autocast(self.device):
                        logits = self.model.decode(next_ids[:, None], cache).float()
