"""`GET /api/v1/presets`: what a training request may say, read from the model library itself: the presets with
their values and what each is for, every hyperparameter with its meaning, default and bounds, and each tokenizer's
options. The CLI's `lfz presets` and the dashboard's training form show the same document."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.openapi import operation
from gateway.views import Presets
from model.config import describe_hyperparameters
from model.presets import DEFAULT_PRESET, PRESETS
from model.tokenizers import OPTIONS


def presets_document() -> dict[str, Any]:
    tokenizers = {kind: {name: {"default": default, "min": minimum} for name, (default, minimum) in options.items()}
                  for kind, options in OPTIONS.items()}
    return Presets(
        default=DEFAULT_PRESET,
        presets=[{"name": name, "about": preset.about, "values": preset.values} for name, preset in PRESETS.items()],
        hyperparameters=describe_hyperparameters(),
        tokenizers=tokenizers,
    ).json_dict()


DOCUMENT = presets_document()  # the library's own description: the same for every request


@operation(summary="Presets, hyperparameters and tokenizer options", tag="models", responses={200: Presets})
async def presets(request: Request) -> JSONResponse:
    """Each preset with its values and what it is for (`default` is the one a request without `preset` gets); every
    hyperparameter with its meaning, default, bounds or choices, and the other names it answers to."""
    return JSONResponse(DOCUMENT)


routes = [Route("/presets", presets, methods=["GET"])]
