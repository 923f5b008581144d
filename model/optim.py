"""Optimisers and the learning-rate schedule.

- AdamW with weight decay on matrices only (embeddings included; norms and biases never decayed).
- Muon (optimizer="muon"): the hidden matrices of the blocks take momentum updates orthogonalised by a
  Newton-Schulz iteration, which learns markedly faster per step at this scale; embeddings, the output head
  and the norms stay on AdamW.
- Schedule: linear warm-up, then cosine (or linear) decay to min_lr_ratio of the peak at max_iters.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from model.config import TrainConfig


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """Fraction of the peak learning rate at `step` (0-based)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.max_iters - cfg.warmup))
    if cfg.schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def orthogonalize(G: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximately replace the singular values of each matrix of G (..., m, n) by 1 (quintic Newton-Schulz).
    The iteration tolerates bf16 (`dtype`), which doubles its speed where bf16 products are fast."""
    a, b, c = 3.4445, -4.7750, 2.0315  # coefficients chosen to push singular values towards 1 quickly
    X = (G / (G.norm(dim=(-2, -1), keepdim=True) + 1e-7)).to(dtype)  # spectral norm <= Frobenius norm <= 1
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT  # iterate on the wide orientation: X @ X^T is the smaller product
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum (Nesterov) followed by orthogonalisation; matrices of one shape are processed as a batch."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0,
                 steps: int = 5, bf16: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, steps=steps))
        self.dtype = torch.bfloat16 if bf16 else torch.float32

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            by_shape: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
            for shape, params in by_shape.items():
                grads = torch.stack([p.grad for p in params])  # (n, rows, cols)
                bufs = []
                for p in params:
                    state = self.state[p]
                    if "momentum" not in state:
                        state["momentum"] = torch.zeros_like(p)
                    bufs.append(state["momentum"])
                buf = torch.stack(bufs)
                buf.mul_(group["momentum"]).add_(grads)
                for b, new in zip(bufs, buf):
                    b.copy_(new)
                update = orthogonalize(grads.add_(buf, alpha=group["momentum"]), group["steps"], self.dtype)
                # Scale so that the update's RMS does not shrink for tall matrices.
                update *= max(1.0, shape[0] / shape[1]) ** 0.5
                lr, wd = group["lr"], group["weight_decay"]
                for p, u in zip(params, update):
                    if wd:
                        p.mul_(1.0 - lr * wd)
                    p.add_(u, alpha=-lr)


def build_optimizers(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, bf16: bool = False,
                     shard: bool = False) -> list[torch.optim.Optimizer]:
    """One or two optimisers; every param group remembers its peak rate as `peak_lr` for the schedule. `shard` (in a
    process group of several ranks): each rank keeps the state of its share of the parameters only (ZeRO stage 1,
    torch's ZeroRedundancyOptimizer), and gets the others' updated parameters after each step."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    muon: list[torch.Tensor] = []
    if cfg.optimizer == "muon":
        muon = [p for n, p in named if n.startswith("blocks.") and p.dim() == 2]
    muon_ids = {id(p) for p in muon}
    rest = [p for _, p in named if id(p) not in muon_ids]
    decay = [p for p in rest if p.dim() >= 2]
    no_decay = [p for p in rest if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay), dict(params=no_decay, weight_decay=0.0)]
    fused = device.type in ("cuda", "cpu")

    def make(kind: type[torch.optim.Optimizer], params: Any, **options: Any) -> torch.optim.Optimizer:
        if not shard:
            return kind(params, **options)
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=kind, **options)

    opts = [make(torch.optim.AdamW, groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)]
    if muon:
        opts.append(make(Muon, muon, lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=cfg.weight_decay,
                         steps=cfg.muon_steps, bf16=bf16))
    for opt in opts:
        for g in opt.param_groups:
            g["peak_lr"] = g["lr"]
    return opts


def gather_state(optimizers: list[torch.optim.Optimizer]) -> None:
    """Before rank 0 reads the optimisers' state for a checkpoint (a collective: every rank calls it): the shards of
    sharded optimisers are sent to rank 0, whose `state_dict()` is then the whole state, as one rank's would be."""
    for opt in optimizers:
        if hasattr(opt, "consolidate_state_dict"):
            opt.consolidate_state_dict(to=0)


def set_lr(optimizers: list[torch.optim.Optimizer], multiplier: float) -> None:
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["peak_lr"] * multiplier
