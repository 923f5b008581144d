"""Commands: what somebody asks the system to do. Each lives on its own request topic.

Anyone with a Kafka producer may send these as JSON; fields not given take the defaults below.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from events.fields import DatasetRef, Identifier, Message, ModelName, new_id, utc_now
from pydantic import AwareDatetime

TokenizerKind = Literal["char", "word", "bpe"]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Command(Message):
    owner: str | None = Field(default=None, description="Tenant that sent it (set by the gateway from the API key).")
    requested_at: AwareDatetime = Field(default_factory=utc_now)


class TrainRequested(Command):
    """Train a model (new, or continue from its latest checkpoint when `model_id` names an existing one)."""

    type: Literal["TrainRequested"] = "TrainRequested"
    job_id: Identifier = Field(default_factory=new_id)
    model_name: ModelName
    model_id: Identifier | None = Field(default=None, description="Existing model to continue training.")
    description: str = Field(default="", max_length=2000)
    dataset: DatasetRef
    tokenizer: TokenizerKind = "char"
    tokenizer_options: dict[str, int] = Field(
        default_factory=dict, description="For `word`: max_vocab, min_frequency. For `bpe`: vocab_size."
    )
    hyperparameters: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict,
        description="A `preset` name and overrides, in either naming style (`max_iters` or `MAX_ITERS`).",
    )


class EvaluateRequested(Command):
    """Evaluate a trained model: held-out perplexity and generation statistics over prompts."""

    type: Literal["EvaluateRequested"] = "EvaluateRequested"
    job_id: Identifier = Field(default_factory=new_id)
    model_id: Identifier | None = None
    model_name: ModelName | None = None
    held_out: DatasetRef | None = Field(default=None, description="Text the model did not train on.")
    prompts: list[Annotated[str, StringConstraints(max_length=4000)]] = Field(default_factory=list, max_length=64)
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
    seed: int | None = 0

    @model_validator(mode="after")
    def _names_a_model(self) -> EvaluateRequested:
        if self.model_id is None and self.model_name is None:
            raise ValueError("give `model_id` or `model_name`")
        return self


class GenerateRequested(Command):
    """Generate text from a trained model; tokens are published as they are produced."""

    type: Literal["GenerateRequested"] = "GenerateRequested"
    request_id: Identifier = Field(default_factory=new_id)
    model_id: Identifier | None = None
    model_name: ModelName | None = None
    prompt: str = Field(default="", max_length=100_000)
    max_tokens: int = Field(default=64, ge=1, le=8192, description="New tokens, not counting the prompt.")
    temperature: float = Field(default=0.8, ge=0.0, le=5.0, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0, allow_inf_nan=False)
    stop: list[StopString] = Field(default_factory=list, max_length=8)
    seed: int | None = None
    num_sequences: int = Field(default=1, ge=1, le=8)
    stream: bool = Field(default=True, description="Publish TokensGenerated events as tokens are produced.")

    @model_validator(mode="after")
    def _names_a_model(self) -> GenerateRequested:
        if self.model_id is None and self.model_name is None:
            raise ValueError("give `model_id` or `model_name`")
        return self

    @property
    def job_id(self) -> str:
        return self.request_id


class CancelRequested(Command):
    """Stop a job: a queued one never starts, a running one stops within seconds."""

    type: Literal["CancelRequested"] = "CancelRequested"
    job_id: Identifier
    reason: str = Field(default="cancelled by request", max_length=500)


AnyCommand = TrainRequested | EvaluateRequested | GenerateRequested | CancelRequested
COMMANDS: dict[str, type[Command]] = {
    cls.model_fields["type"].default: cls
    for cls in (TrainRequested, EvaluateRequested, GenerateRequested, CancelRequested)
}


def command_payload(command: Command) -> dict[str, Any]:
    return command.model_dump(mode="json")
