"""The training loop. It knows nothing of Kafka or storage: it reports through callbacks, which the agents turn
into events, and hands checkpoints over as state dicts (see checkpoint.py for their bytes).

A run resumed from a checkpoint continues exactly where it stopped: model, optimisers, step, best validation
loss and every random state (data sampling and dropout) are restored, so the next step gives the same loss as
an uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from model.config import ModelConfig, TrainConfig, model_config_from_dict, train_config_from_dict
from model.data import BatchSampler, Tokens, check_split
from model import fast
from model.distributed import World, any_rank, share_of, sum_over
from model.device import autocast, bf16_matmuls, pick_device
from model.gpt import GPT
from model.optim import build_optimizers, gather_state, lr_multiplier, set_lr
from model.tokenizers import Tokenizer

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class StepInfo:
    step: int  # optimisation steps done so far
    max_iters: int
    loss: float  # training loss of this step (mean over its micro-batches)
    lr: float  # AdamW's learning rate at this step
    tokens_per_s: float  # since the previous report
    elapsed_s: float


@dataclass(frozen=True)
class ValInfo:
    step: int
    val_loss: float
    best_val_loss: float
    is_best: bool


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    state: dict[str, Any]  # everything needed to resume, on the CPU; pack_checkpoint() turns it into bytes
    is_best: bool  # the validation loss at this step is the best so far
    reason: str  # "periodic", "best", "final", "early_stop" or "cancelled"


@dataclass(frozen=True)
class TrainResult:
    step: int
    train_loss: float
    val_loss: float | None
    best_val_loss: float | None
    wall_s: float
    tokens_per_s: float
    stopped_early: bool
    cancelled: bool


@dataclass
class Callbacks:
    """Optional hooks; any object with some of these attributes will do."""

    on_step: Callable[[StepInfo], None] | None = None
    on_validation: Callable[[ValInfo], None] | None = None
    on_checkpoint: Callable[[CheckpointInfo], None] | None = None
    should_stop: Callable[[], bool] | None = None  # checked before every step: True cancels the run


def _cpu_copy(obj: Any, memo: dict) -> Any:
    """Deep copy onto the CPU, keeping tensors that share storage (tied weights) shared."""
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), tuple(obj.shape), tuple(obj.stride()))
        if key not in memo:
            memo[key] = obj.detach().to("cpu", copy=True)
        return memo[key]
    if isinstance(obj, dict):
        return {k: _cpu_copy(v, memo) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v, memo) for v in obj)
    return obj


class Trainer:
    def __init__(self, model_config: ModelConfig | None, train_config: TrainConfig | None,
                 train_ids: Tokens, val_ids: Tokens, callbacks: Any = None,
                 device: torch.device | str | None = None, resume: dict[str, Any] | None = None,
                 tokenizer: Tokenizer | None = None, fast_paths: bool = True, world: World | None = None):
        """With `resume`, the checkpoint's model config wins (the network must match its weights); its train
        config is used unless another is given (e.g. to train for more steps). `fast_paths` False trains the
        readable network only (model/fast). `world`: this process's rank among several training one run together
        (model/distributed.py); its process group must be initialised already. `train_ids` and `val_ids`: tensors, or
        TokenSequences (memory-mapped shards), which are read a batch at a time and never copied whole."""
        if resume is not None:
            model_config = model_config_from_dict(resume["model_config"])
            train_config = train_config or train_config_from_dict(resume["train_config"])
        if model_config is None or train_config is None:
            raise ValueError("model_config and train_config are needed unless resuming")
        self.mcfg, self.cfg = model_config, train_config
        self.world = world or World()
        self.share = share_of(self.world, train_config.batch_size, train_config.grad_accum)
        self.callbacks = callbacks or Callbacks()
        self.tokenizer = tokenizer
        self.device = pick_device(str(device) if device is not None else None)
        check_split(train_ids, model_config.context_length, "train")
        check_split(val_ids, model_config.context_length, "validation")
        self.val_ids = val_ids

        torch.manual_seed(train_config.seed)
        self.model = GPT(model_config).to(self.device)
        self.fast_paths = fast_paths
        if fast_paths:
            fast.enable(self.model)
        bf16 = bf16_matmuls(self.device, train_config.precision)
        self.optimizers = build_optimizers(self.model, train_config, self.device,
                                           bf16=bf16 or self.device.type == "cuda",
                                           shard=train_config.shard_optimizer and self.world.size > 1)
        self.sampler = BatchSampler(train_ids, train_config.batch_size, model_config.context_length,
                                    train_config.seed, self.device)
        self.step = 0
        self.best_val_loss: float | None = None
        self.val_loss: float | None = None
        self.bad_evals = 0  # validations in a row without improvement
        if resume is not None:
            self._restore(resume)
        self.bf16 = bf16 and fast_paths  # the blocks' products in bfloat16 (model/fast/bf16.py)
        compile_ = train_config.compile == "always" or (train_config.compile == "auto" and self.device.type == "cuda")
        self.forward = torch.compile(self.model) if compile_ else self.model
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        if self.world.size > 1:  # gradients averaged over the ranks as they are computed; rank 0's weights to all
            # The buffers (rotary tables, masks) are constants, the same on every rank: nothing to broadcast.
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False)
            self.forward = torch.compile(self.ddp) if compile_ else self.ddp

    def _hook(self, name: str):
        return getattr(self.callbacks, name, None)

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
        self.model.load_state_dict(state["model"])
        self.step = state["step"]
        if "optimizers" not in state:  # weights only (an imported model): the run starts its optimisers afresh
            return
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError("checkpoint was made with a different optimizer setting")
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self.best_val_loss, self.val_loss = state["best_val_loss"], state["val_loss"]
        self.bad_evals = state["bad_evals"]
        self.sampler.load_state(state["rng"]["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def state(self, train_loss: float | None = None) -> dict[str, Any]:
        """A checkpoint of the run as it stands: CPU tensors and plain values only (weights_only-loadable)."""
        memo: dict = {}
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model_config": asdict(self.mcfg),
            "train_config": asdict(self.cfg),
            "model": _cpu_copy(self.model.state_dict(), memo),
            "optimizers": [_cpu_copy(opt.state_dict(), memo) for opt in self.optimizers],
            "tokenizer": self.tokenizer.to_json() if self.tokenizer is not None else None,
            "train_loss": train_loss,
            "val_loss": self.val_loss,
            "best_val_loss": self.best_val_loss,
            "bad_evals": self.bad_evals,
            "rng": {
                "sampler": self.sampler.state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            },
        }

    @torch.no_grad()
    def estimate_val_loss(self) -> float:
        """Mean loss over eval_iters validation batches, the same batches at every validation."""
        sampler = BatchSampler(self.val_ids, self.cfg.batch_size, self.mcfg.context_length, self.cfg.seed + 1,
                               self.device)
        self.model.eval()
        total = torch.zeros((), device=self.device)
        forward = self.forward if self.ddp is None else self.model  # no gradients: DDP has nothing to do
        for index in range(self.cfg.eval_iters):
            x, y = sampler.next()
            if index % self.world.size == self.world.rank:  # the ranks share the batches out
                with autocast(self.device, self.cfg.precision):
                    total += forward(x, y)[1]
        self.model.train()
        return sum_over(self.world, total).item() / self.cfg.eval_iters

    def _validate(self) -> bool:
        """Run a validation; returns whether it is the best so far."""
        self.val_loss = self.estimate_val_loss()
        is_best = self.best_val_loss is None or self.val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss, self.bad_evals = self.val_loss, 0
        else:
            self.bad_evals += 1
        if hook := self._hook("on_validation"):
            hook(ValInfo(self.step, self.val_loss, self.best_val_loss, is_best))
        return is_best

    def _checkpoint(self, reason: str, is_best: bool, train_loss: float | None) -> None:
        gather_state(self.optimizers)  # a sharded optimiser's state, whole on rank 0
        if not self.world.main:  # every rank holds the same weights and optimiser state: rank 0 writes them
            return
        if hook := self._hook("on_checkpoint"):
            hook(CheckpointInfo(self.step, self.state(train_loss), is_best, reason))

    def run(self) -> TrainResult:
        if self.bf16:  # bfloat16 products for the run's steps and validations only
            fast.enable(self.model, bf16=True)
        try:
            return self._run()
        finally:
            if self.bf16:
                fast.enable(self.model, bf16=False)  # the trained model is handed out in plain float32

    def train_step(self) -> torch.Tensor:
        """One optimisation step at the schedule's learning rate: grad_accum micro-batches, clipping, the
        optimisers. Returns the sum of its micro-batches' losses, still on the device (reading it waits for it).
        With several ranks, each computes its share of the micro-batches (DDP averages the gradients) and the sum
        returned is the whole step's, the same as one rank's would be."""
        cfg, share = self.cfg, self.share
        set_lr(self.optimizers, lr_multiplier(self.step, cfg))
        loss_sum = torch.zeros((), device=self.device)
        mine = [self.sampler.next() for _ in range(cfg.grad_accum)]  # every rank draws the whole step
        for count, index in enumerate(share.micro, start=1):
            x, y = mine[index]
            x, y = x[share.rows], y[share.rows]
            # DDP averages the gradients once, after the last micro-batch of the step.
            with self.ddp.no_sync() if self.ddp is not None and count < share.accumulation else nullcontext():
                with autocast(self.device, cfg.precision):
                    _, loss = self.forward(x, y)
                (loss / share.accumulation).backward()
            loss_sum += loss.detach()
        if self.world.size > 1:  # the mean over every rank's windows, scaled as one rank's sum would be
            loss_sum = sum_over(self.world, loss_sum) * cfg.grad_accum / (self.world.size * share.accumulation)
        if cfg.grad_clip > 0:  # after backward: the gradients exist now
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        for opt in self.optimizers:
            opt.step()
        self.model.zero_grad(set_to_none=True)
        self.step += 1
        return loss_sum

    def _run(self) -> TrainResult:
        cfg, model = self.cfg, self.model
        should_stop = self._hook("should_stop")
        on_step = self._hook("on_step")
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.sampler.window
        model.train()
        start = last_report = time.perf_counter()
        first_step, reported_step = self.step, self.step
        train_loss, stopped_early, cancelled = math.nan, False, False
        while self.step < cfg.max_iters:
            # Every rank stops at the same step, whichever was told first.
            if any_rank(self.world, should_stop is not None and should_stop(), self.device):
                cancelled = True
                break
            loss_sum = self.train_step()

            last = self.step == cfg.max_iters
            # The run's first step is reported too: its time says how long the whole run will take.
            if self.step % cfg.log_every == 0 or last or self.step == first_step + 1:
                train_loss = loss_sum.item() / cfg.grad_accum
                now = time.perf_counter()
                if on_step is not None:
                    speed = (self.step - reported_step) * tokens_per_step / max(now - last_report, 1e-9)
                    lr = cfg.learning_rate * lr_multiplier(self.step - 1, cfg)  # the rate the last step took
                    on_step(StepInfo(self.step, cfg.max_iters, train_loss, lr, speed, now - start))
                last_report, reported_step = now, self.step
            is_best = False
            if self.step % cfg.eval_every == 0 or last:
                is_best = self._validate()
                patience = cfg.early_stopping_patience
                stopped_early = patience > 0 and self.bad_evals >= patience and not last
            if stopped_early or last or is_best or self.step % cfg.checkpoint_every == 0:
                train_loss = loss_sum.item() / cfg.grad_accum
                reason = ("early_stop" if stopped_early else "final" if last else
                          "best" if is_best else "periodic")
                self._checkpoint(reason, is_best, train_loss)
            if stopped_early:
                break
        if cancelled and self.step > first_step:
            self._checkpoint("cancelled", False, train_loss)
        wall = time.perf_counter() - start
        done = self.step - first_step
        return TrainResult(self.step, train_loss, self.val_loss, self.best_val_loss, wall,
                           done * tokens_per_step / max(wall, 1e-9), stopped_early, cancelled)
