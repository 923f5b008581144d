"""Continuous batching: one engine serves every generation of a model, in one forward pass per token.

The engine keeps a fixed pool of KV-cache slots, `[slots, heads, context, head_size]` per layer, and a length per
slot. Each `step()`:
    admit   waiting requests take the lowest free slots (one per sequence) and their prompts are prefilled, a
            bounded number of prompt tokens per step so that a long prompt does not stall the others;
    decode  every active sequence advances by one token in one batched pass, each at its own position (learned,
            sinusoidal or rotary) and attending only to its own cached tokens (a length mask);
    sample  each row with its own request's parameters and its own seeded generator, so a request samples the same
            text whatever else shares the batch; finished sequences free their slots at once.

Sequences grow past the context as with `Generator`: with rotary positions a slot is a ring, with absolute ones
the sequence is prefilled again from its last 3/4 context. Greedy output equals `Generator`'s token for token.

Not thread-safe except for `submit()` and `Stream.cancel()`: one thread calls `step()` (or `run()`); PyTorch
releases the GIL while it computes.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn import functional as F

from model.fast.decode import affine, decode_plan
from model.generate import Row, SamplingParams, Token, advance
from model.gpt import GPT, apply_rotary, rotary_table
from model.tokenizers import Tokenizer

Deliver = Callable[[Token | None], None]  # a token, or None once every sequence of the request has finished


@dataclass(eq=False)
class Stream:
    """One request: its sequences' tokens go to `deliver` as they are made (from the engine's thread)."""

    prompt_ids: list[int]
    params: SamplingParams
    deliver: Deliver
    submitted_at: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    open_sequences: int = 0
    refused: str | None = None  # why it ended without its tokens (waited too long, the engine failed)

    def cancel(self) -> None:
        """Stop it: its slots are freed at the next step and nothing more is delivered."""
        self.cancelled = True


@dataclass(eq=False)
class _Sequence:
    stream: Stream
    index: int
    slot: int
    row: Row
    generator: torch.Generator
    seen: torch.Tensor | None  # (V,) tokens of the prompt and output, for the repetition penalty
    todo: list[int]  # prompt tokens still to prefill
    length: int = 0  # tokens written in the slot's cache (past the context in ring mode)
    next_id: int | None = None  # sampled, not yet fed


class Engine:
    def __init__(self, model: GPT, tokenizer: Tokenizer, slots: int = 64, prefill_tokens: int = 512,
                 max_wait_s: float = math.inf):
        self.model = model.eval()
        self.tokenizer = tokenizer
        c = model.config
        self.context, self.ring = c.context_length, c.positions == "rotary"
        self.slots, self.prefill_tokens, self.max_wait_s = slots, max(prefill_tokens, 1), max_wait_s
        self.device = next(model.parameters()).device
        shape = (slots, c.num_heads, c.context_length, c.head_size)
        self.k = [torch.zeros(shape, device=self.device) for _ in range(c.num_blocks)]
        self.v = [torch.zeros(shape, device=self.device) for _ in range(c.num_blocks)]
        self.free = list(range(slots))  # kept sorted: the lowest slots are taken first, so active rows stay packed
        self.active: dict[int, _Sequence] = {}
        self.waiting: deque[Stream] = deque()
        self._lock = threading.Condition()
        self.never = torch.tensor([i for i in range(tokenizer.vocab_size) if b"\x00" in tokenizer.token_bytes(i)],
                                  dtype=torch.long, device=self.device)
        self.tokens_made = 0
        self.plan = decode_plan(model)  # the weights one decoding step reads, gathered once

    # -- the requests' side -------------------------------------------------------------------------------------------

    def submit(self, prompt: str | list[int], params: SamplingParams, deliver: Deliver) -> Stream:
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        stream = Stream(ids or [self.tokenizer.eot_id], params, deliver)  # an empty prompt starts a new document
        if params.num_sequences > self.slots:  # it would wait for ever
            stream.refused = f"num_sequences: at most {self.slots} (the engine's slots), got {params.num_sequences}"
            deliver(None)
            return stream
        with self._lock:
            self.waiting.append(stream)
            self._lock.notify()
        return stream

    @property
    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    def run(self, stop: threading.Event, idle_s: float = 0.05, threads: int | None = None) -> None:
        """Step while there is work; wait for a request otherwise; until `stop` is set. A step that fails ends every
        request in the engine (refused, with the error), never the thread. `threads` sets PyTorch's threads, for the
        whole process: from a thread other than the main one, small products run far slower with a team of several
        (128 tokens of cpu-baby, one sequence: 148 ms with 2 threads, 66 ms with 1)."""
        if threads is not None:
            torch.set_num_threads(threads)
        while not stop.is_set():
            with self._lock:
                if not self.busy:
                    self._lock.wait(idle_s)
                    continue
            try:
                self.step()
            except Exception as error:  # noqa: BLE001 - reported to each request, which the agent turns into a fact
                self.refuse_all(f"internal error: {type(error).__name__}: {error}")

    def refuse_all(self, reason: str) -> None:
        """End every request in the engine, each told why."""
        with self._lock:
            streams = {s.stream for s in self.active.values()} | set(self.waiting)
            self.waiting.clear()
        for seq in list(self.active.values()):
            self._release(seq)
        for stream in streams:
            stream.refused = reason
            stream.deliver(None)

    # -- one step -----------------------------------------------------------------------------------------------------

    def step(self) -> None:
        with torch.inference_mode():
            self._drop_cancelled()
            ready = self._admit()  # sequences whose prompt is now in their slot, with next-token logits
            decoding = [s for s in self.active.values() if s.next_id is not None]
            if decoding:
                ready += list(zip(decoding, self._decode(decoding)))
            if ready:
                self._sample_and_advance(ready)

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.active.values() if s.stream.cancelled]:
            self._release(seq)
        with self._lock:
            for stream in [s for s in self.waiting if s.cancelled]:
                self.waiting.remove(stream)

    def _admit(self) -> list[tuple[_Sequence, torch.Tensor]]:
        now = time.perf_counter()
        with self._lock:
            while self.waiting and now - self.waiting[0].submitted_at > self.max_wait_s:
                late = self.waiting.popleft()
                late.refused = (f"no generation slot came free within {self.max_wait_s:g} s (all {self.slots} are "
                                "busy); try again later")
                late.deliver(None)
            while self.waiting and len(self.free) >= self.waiting[0].params.num_sequences:
                self._start(self.waiting.popleft())
        budget, ready = self.prefill_tokens, []
        for seq in sorted((s for s in self.active.values() if s.todo), key=lambda s: s.stream.submitted_at):
            if budget <= 0:
                break
            chunk, seq.todo = seq.todo[:budget], seq.todo[budget:]
            budget -= len(chunk)
            logits = self._prefill(seq, chunk)
            if not seq.todo:
                ready.append((seq, logits))
        return ready

    def _start(self, stream: Stream) -> None:
        p, V = stream.params, self.tokenizer.vocab_size
        window = stream.prompt_ids[-self.context:]
        seed = p.seed if p.seed is not None else random.randrange(2**63)
        for index in range(p.num_sequences):
            seen = None
            if p.repetition_penalty != 1.0:
                seen = torch.zeros(V, dtype=torch.bool, device=self.device)
                seen[torch.tensor(stream.prompt_ids, device=self.device)] = True
            generator = torch.Generator(device=self.device).manual_seed(seed + index)
            seq = _Sequence(stream, index, self.free.pop(0), Row(0, stream.prompt_ids, list(window)), generator,
                            seen, list(window))
            self.active[seq.slot] = seq
        stream.open_sequences = p.num_sequences

    def _release(self, seq: _Sequence) -> None:
        del self.active[seq.slot]
        self.free.append(seq.slot)
        self.free.sort()

    # -- the network, over slots --------------------------------------------------------------------------------------

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids, positions (N,) -> x (N, C) and, for rotary positions, the rotations (N, 1, 1, hs/2) of queries and
        keys together."""
        m = self.model
        x = m.tok_emb.weight[ids]
        if m.config.positions == "rotary":
            return x, rotary_table(positions, m.inv_freq)[:, None, None]
        return x + (m.pos_emb.weight[positions] if m.pos_emb is not None else m.pos_table[positions]), None

    def _qkv(self, layer: tuple, x: torch.Tensor, rope: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C) -> qk (N, 2, nh, hs), normalised and rotated as the model does, and v (N, nh, hs)."""
        _, nh, hs, qk_norm, *_ = self.plan
        ln1, qkv_t, qkv_b = layer[:3]
        qkv = affine(F.layer_norm(x, (x.size(-1),), *ln1), qkv_t, qkv_b).view(-1, 3, nh, hs)
        qk = qkv[:, :2]
        if qk_norm:
            qk = F.layer_norm(qk, (hs,))
        if rope is not None:
            qk = apply_rotary(qk, rope)
        return qk, qkv[:, 2]

    @staticmethod
    def _after_attention(layer: tuple, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The rest of a block: x (N, C) plus the projection of the heads' outputs y (N, C), then the feed-forward."""
        _, _, _, proj_t, proj_b, ln2, fc_t, fc_b, out_t, out_b, activate = layer
        x = x + affine(y, proj_t, proj_b)
        return x + affine(activate(affine(F.layer_norm(x, (x.size(-1),), *ln2), fc_t, fc_b)), out_t, out_b)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        *_, ln_f, head_t = self.plan
        return affine(F.layer_norm(x, (x.size(-1),), *ln_f), head_t, None).float()

    def _prefill(self, seq: _Sequence, chunk: list[int]) -> torch.Tensor:
        """Feed `chunk` after the `seq.length` tokens already in its slot (from 0 at a fresh start) -> the logits
        after its last token (V,)."""
        start, T, s = seq.length, len(chunk), seq.slot
        end = start + T
        positions = torch.arange(start, end, device=self.device)
        x, rope = self._embed(torch.tensor(chunk, device=self.device), positions)
        C, _, _, _, scale, layers, _, _ = self.plan
        mask = None if start == 0 else (torch.arange(end, device=self.device)[None, :] <= positions[:, None])
        for i, layer in enumerate(layers):
            qk, v = self._qkv(layer, x, rope)
            self.k[i][s, :, start:end] = qk[:, 1].transpose(0, 1)
            self.v[i][s, :, start:end] = v.transpose(0, 1)
            keys, values = self.k[i][s, :, :end], self.v[i][s, :, :end]  # (nh, end, hs)
            y = F.scaled_dot_product_attention(qk[:, 0].transpose(0, 1), keys, values, attn_mask=mask,
                                               is_causal=mask is None, scale=scale)  # (nh, T, hs)
            x = self._after_attention(layer, x, y.transpose(0, 1).reshape(T, C))
        seq.length = end
        return self._logits(x[-1:])[0]

    def _decode(self, seqs: list[_Sequence]) -> torch.Tensor:
        """One new token for each sequence, in one pass over the slots 0 .. the highest one of them -> (len, V)."""
        dev, cap = self.device, self.context
        C, nh, hs, _, scale, layers, _, _ = self.plan
        hi = max(s.slot for s in seqs) + 1
        ids, lengths = [self.tokenizer.pad_id] * hi, [0] * hi  # an idle slot computes a pad at 0, written nowhere
        for s in seqs:
            ids[s.slot], lengths[s.slot] = s.next_id, s.length
        seen = [min(n + 1, cap) for n in lengths]  # cached tokens each row attends to, this one included
        n = max(seen)
        x, rope = self._embed(torch.tensor(ids, device=dev), torch.tensor(lengths, device=dev))
        bias = None
        if min(seen) < n:  # one additive mask for every layer and head: -inf where a row's slot holds none of its own
            hidden = torch.arange(n, device=dev)[None, :] >= torch.tensor(seen, device=dev)[:, None]  # (hi, n)
            bias = torch.zeros(hi, n, device=dev).masked_fill_(hidden, -math.inf)
            bias = bias[:, None, None, :].expand(hi, nh, 1, n).reshape(hi * nh, 1, n)
        # Where each decoding row's key and value go, as rows of the cache seen as (slots * heads * context, hs): one
        # index_copy_ per layer. Absolute positions never reach the context here (see _sample_and_advance).
        rows = torch.tensor([s.slot for s in seqs], device=dev)
        at = torch.tensor([(s.length % cap) if self.ring else s.length for s in seqs], device=dev)
        flat = ((rows[:, None] * nh + torch.arange(nh, device=dev)[None, :]) * cap + at[:, None]).view(-1)
        for i, layer in enumerate(layers):
            qk, v = self._qkv(layer, x, rope)
            self.k[i].view(-1, hs).index_copy_(0, flat, qk[rows, 1].reshape(-1, hs))
            self.v[i].view(-1, hs).index_copy_(0, flat, v[rows].reshape(-1, hs))
            # Attention as two batched products: at one query per row this beats the masked fused kernel.
            keys = self.k[i][:hi, :, :n].reshape(hi * nh, n, hs)  # a view: (hi, nh) merge without a copy
            values = self.v[i][:hi, :, :n].reshape(hi * nh, n, hs)
            query = qk[:, 0].reshape(hi * nh, 1, hs)
            if bias is None:
                scores = torch.bmm(query, keys.transpose(1, 2)).mul_(scale)
            else:
                scores = torch.baddbmm(bias, query, keys.transpose(1, 2), alpha=scale)
            y = torch.bmm(torch.softmax(scores, dim=-1), values)  # (hi * nh, 1, hs)
            x = self._after_attention(layer, x, y.view(hi, C))
        for s in seqs:
            s.length += 1
        return self._logits(x[rows])

    # -- sampling -----------------------------------------------------------------------------------------------------

    def _sample(self, seqs: list[_Sequence], logits: torch.Tensor) -> list[int]:
        """Each row with its own request's parameters; the noise from each sequence's own generator."""
        if self.never.numel():
            logits = logits.index_fill(-1, self.never, -math.inf)
        params = [s.stream.params for s in seqs]
        penalised = [i for i, p in enumerate(params) if p.repetition_penalty != 1.0]
        if penalised:
            idx = torch.tensor(penalised, device=self.device)
            rows, seen = logits[idx], torch.stack([seqs[i].seen for i in penalised])
            penalty = torch.tensor([params[i].repetition_penalty for i in penalised], device=self.device)[:, None]
            logits[idx] = torch.where(seen, torch.where(rows > 0, rows / penalty, rows * penalty), rows)
        hot = [i for i, p in enumerate(params) if p.temperature > 0]
        if not hot:
            return logits.argmax(dim=-1).tolist()
        everyone = len(hot) == len(params)
        rows = logits if everyone else logits[torch.tensor(hot, device=self.device)]
        temperatures = [params[i].temperature for i in hot]
        if len(set(temperatures)) == 1:
            rows = rows / temperatures[0]
        else:
            rows = rows / torch.tensor(temperatures, device=self.device)[:, None]
        V = rows.size(-1)
        top_ks = [min(params[i].top_k or V, V) for i in hot]
        if min(top_ks) < V:
            ks = torch.tensor(top_ks, device=self.device)
            top = torch.topk(rows, max(k for k in top_ks if k < V), dim=-1).values
            kth = top.gather(1, (ks.clamp(max=top.size(-1)) - 1)[:, None])
            rows = rows.masked_fill((rows < kth) & (ks < V)[:, None], -math.inf)
        top_ps = [params[i].top_p for i in hot]
        if min(top_ps) < 1.0:
            ps = torch.tensor(top_ps, device=self.device)[:, None]
            sorted_rows, order = torch.sort(rows, dim=-1, descending=True)
            probs = F.softmax(sorted_rows, dim=-1)
            drop = (probs.cumsum(dim=-1) - probs >= ps) & (ps < 1.0)
            rows = rows.scatter(-1, order, sorted_rows.masked_fill(drop, -math.inf))
        probs = F.softmax(rows, dim=-1)
        race = torch.stack([torch.empty(1, V, device=self.device).exponential_(1.0, generator=seqs[i].generator)[0]
                            for i in hot]).clamp_min_(1e-30)
        chosen = (probs / race).argmax(dim=-1).tolist()
        if everyone:
            return chosen
        out = logits.argmax(dim=-1).tolist()
        for i, token in zip(hot, chosen):
            out[i] = token
        return out

    def _sample_and_advance(self, ready: list[tuple[_Sequence, torch.Tensor]]) -> None:
        seqs = [s for s, _ in ready]
        ids = self._sample(seqs, torch.stack([logits for _, logits in ready]))
        now = time.perf_counter()
        for seq, token in zip(seqs, ids):
            if seq.seen is not None:
                seq.seen[token] = True
            piece = advance(seq.row, token, seq.stream.params, now, self.tokenizer)
            self.tokens_made += 1
            seq.stream.deliver(Token(token, piece, len(seq.row.generated) - 1, seq.index, seq.row.finish_reason))
            if seq.row.finish_reason is not None:
                self._release(seq)
                seq.stream.open_sequences -= 1
                if seq.stream.open_sequences == 0:
                    seq.stream.deliver(None)
            elif not self.ring and seq.length >= self.context:
                # Absolute positions: a full slot is prefilled again from the recent tokens (next step).
                seq.length, seq.next_id = 0, None
                seq.todo = seq.row.history[-max(1, self.context - self.context // 4):]
            else:
                seq.next_id = token
