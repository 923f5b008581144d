"""Data-parallel training (model/distributed.py) on this machine's CPU: two ranks in a gloo process group train what
one rank trains, and a checkpoint written by two resumes on one. The ranks are spawned processes, as the elastic
launcher makes them."""

from __future__ import annotations

import io
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.config import ConfigError, resolve_hyperparameters
from model.data import prepare_corpus
from model.distributed import World, check_world, share_of
from model.tokenizers import train_tokenizer
from model.trainer import Trainer

STEPS = 100
HP = {"preset": "tiny", "max_iters": STEPS, "eval_every": 50, "checkpoint_every": 50}


def _text() -> str:
    lines = ["the cat sat on the mat.", "the dog sat on the log.", "a cat and a dog met on the mat."]
    return "\n".join(lines[i % len(lines)] for i in range(300)) + "\n"


def _train(world: World, hp: dict, resume: dict | None = None) -> tuple[list[float], list[float], dict[int, dict]]:
    """(loss of every step, validation losses, {step: checkpoint state}) of one run on this rank."""
    torch.set_num_threads(1)
    text = _text()
    tokenizer = train_tokenizer("char", text)
    model_config, train_config = resolve_hyperparameters(hp)
    train_ids, val_ids = prepare_corpus(text, tokenizer, train_config.val_fraction)
    losses, val_losses, states = [], [], {}

    class Recorder:
        def on_step(self, info):
            losses.append(info.loss)

        def on_validation(self, info):
            val_losses.append(info.val_loss)

        def on_checkpoint(self, info):
            states[info.step] = info.state

    trainer = Trainer(model_config.with_vocab(tokenizer.vocab_size) if resume is None else None,
                      train_config if resume is None else None, train_ids, val_ids, Recorder(), device="cpu",
                      resume=resume, tokenizer=tokenizer, world=world)
    trainer.run()
    return losses, val_losses, states


def _rank(rank: int, size: int, port: int, hp: dict, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(seconds=60))
    try:
        losses, val_losses, states = _train(World(rank, size), hp)
        # As bytes: tensors sent as they are would live in this process's shared memory, gone once it exits.
        results.put((rank, (losses, val_losses, {step: _packed(state) for step, state in states.items()})))
        # Both ranks leave the group together: one tearing gloo down while the other still packs its results made
        # the process abort at exit once in a few dozen runs ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _packed(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _ranks(size: int, hp: dict) -> dict[int, tuple]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    processes = [context.Process(target=_rank, args=(rank, size, port, hp, results)) for rank in range(size)]
    for process in processes:
        process.start()
    out = {}
    for _ in range(size):
        rank, (losses, val_losses, states) = results.get()
        out[rank] = (losses, val_losses, {step: torch.load(io.BytesIO(data)) for step, data in states.items()})
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    return out


@pytest.mark.parametrize("split, tolerance", [({"grad_accum": 2}, 0.0), ({"batch_size": 4}, 2e-3)],
                         ids=["micro-batches", "rows"])
def test_two_ranks_train_what_one_rank_trains(split, tolerance):
    """The same global batch (4 sequences x grad_accum), split over two ranks either by micro-batch or by rows:
    every step draws the same windows. Split by micro-batch, each rank computes exactly what one rank computed for
    those micro-batches and DDP's average of two gradients is the accumulation's: the curves are identical. Split by
    rows, a micro-batch's mean loss is taken as the mean of two half-batch means, which rounds differently: the
    curves agree to about 1e-3 over 100 steps (measured 1.1e-3 at most)."""
    hp = {**HP, **split}
    one_losses, one_val, _ = _train(World(), hp)
    ranks = _ranks(2, hp)
    (two_losses, two_val, states), (other_losses, other_val, other_states) = ranks[0], ranks[1]
    assert len(one_losses) == len(two_losses) == STEPS
    assert two_losses == other_losses and two_val == other_val, "every rank sees the step's whole loss"
    assert max(abs(a - b) for a, b in zip(one_losses, two_losses)) <= tolerance, (one_losses[-5:], two_losses[-5:])
    assert one_losses[-1] < one_losses[0] - 0.5, "it learned"
    assert max(abs(a - b) for a, b in zip(one_val, two_val)) <= tolerance
    assert sorted(states) == [50, 100] and other_states == {}, "rank 0 alone writes checkpoints"


def test_a_checkpoint_of_two_ranks_resumes_on_one_with_the_same_next_steps():
    two_losses, _, states = _ranks(2, {**HP, "grad_accum": 2})[0]
    resumed, _, _ = _train(World(), {**HP, "grad_accum": 2}, resume=states[50])
    assert len(resumed) == STEPS - 50
    assert resumed == two_losses[50:], "split by micro-batch, one rank computes exactly what two did"


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused():
    assert share_of(World(1, 2), batch_size=4, grad_accum=2).micro == (1,)
    assert share_of(World(1, 2), batch_size=4, grad_accum=1).rows == slice(2, 4)
    with pytest.raises(ConfigError) as error:
        share_of(World(0, 2), batch_size=3, grad_accum=1)
    assert error.value.field == "batch_size" and "2 processes" in error.value.message


def test_a_sharded_optimizer_trains_what_a_whole_one_trains_and_its_checkpoint_resumes_on_one_rank():
    """ZeRO-1: each of two ranks keeps the AdamW state of its share of the parameters and updates those alone; the
    step is the same arithmetic, so the run is the one-rank run, and a checkpoint holds the whole state."""
    hp = {**HP, "grad_accum": 2}
    one_losses, _, _ = _train(World(), hp)
    sharded_losses, _, states = _ranks(2, {**hp, "shard_optimizer": True})[0]
    assert max(abs(a - b) for a, b in zip(one_losses, sharded_losses)) <= 1e-6, (one_losses[-3:], sharded_losses[-3:])
    checkpoint = states[50]
    adamw = checkpoint["optimizers"][0]
    parameters = sum(len(group["params"]) for group in adamw["param_groups"])
    assert len(adamw["state"]) == parameters, "the checkpoint holds every parameter's state, not rank 0's share"
    resumed, _, _ = _train(World(), hp, resume=checkpoint)
    assert max(abs(a - b) for a, b in zip(resumed, sharded_losses[50:])) <= 1e-6


def test_a_world_larger_than_a_job_may_have_or_that_its_batch_does_not_split_over_is_refused_naming_the_field():
    check_world(2, 2, batch_size=4, grad_accum=1, most_processes=8, most_hosts=8)
    for processes, hosts, field, needle in [(9, 1, "processes", "at most 8 training processes per host"),
                                            (1, 9, "hosts", "at most 8 hosts per training job"),
                                            (2, 2, "hyperparameters.batch_size", "over 4 processes")]:
        with pytest.raises(ConfigError) as error:
            check_world(processes, hosts, batch_size=6, grad_accum=1, most_processes=8, most_hosts=8)
        assert error.value.field == field and needle in error.value.message
