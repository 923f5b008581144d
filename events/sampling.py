"""How each new token is picked: the one definition of the sampling fields and their bounds, shared by
GenerateRequested, the gateway's generate body and its OpenAI-compatible routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

StopString = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Sampling(BaseModel):
    temperature: float = Field(default=0.8, ge=0.0, le=5.0, allow_inf_nan=False, description="0 is greedy.")
    top_k: int | None = Field(default=None, ge=1, le=1_000_000, description="Sample among the k likeliest tokens.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False,
                         description="Sample among the likeliest tokens whose probabilities add up to top_p.")
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0, allow_inf_nan=False,
                                      description="Above 1 makes tokens already in the text less likely.")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1, description="Same seed, same text.")
    stop: list[StopString] = Field(default_factory=list, max_length=8,
                                   description="End the text before the first of these strings.")
    num_sequences: int = Field(default=1, ge=1, le=8, description="How many texts to sample from the prompt.")
