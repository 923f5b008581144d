"""`lfz evaluate` and `lfz generate`: measuring a trained model and sampling text from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.client import ApiError, Client
from cli.connection import DEFAULT_URL, JsonOption, UrlOption, gateway, read_text_file, resolve_model
from cli.errors import JobFailed, Stopped
from cli.follow import check_outcome, follow_job
from cli.render import Output, number

ModelArgument = Annotated[str, typer.Argument(help="A model's id or name.", show_default=False)]
DEFAULT_PROMPTS = 3


def prompts_from(text: str, count: int = DEFAULT_PROMPTS, words: int = 3) -> list[str]:
    """The first words of a few lines spread over `text`: prompts that look like what the model learnt."""
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= words]
    if not lines:
        return [""]  # an empty prompt starts a new document
    picks = [lines[i * len(lines) // count] for i in range(min(count, len(lines)))]
    return [" ".join(line.split()[:words]) for line in picks]


def _training_prompts(api: Client, model: dict[str, Any]) -> list[str]:
    key = model.get("dataset_key") or ""
    if not key.startswith("datasets/"):
        return [""]
    try:
        return prompts_from(api.get_dataset(key.removeprefix("datasets/"))["preview"])
    except ApiError:
        return [""]


def evaluation_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    held = report.get("held_out") or {}
    generation = report.get("generation") or {}
    speed = generation.get("speed") or {}
    tokens = generation.get("token_distribution") or {}
    return [
        ("parameters", number((report.get("model") or {}).get("parameters"))),
        ("held-out text", f"{held.get('characters', 0):,} characters ({report.get('held_out_source', '-')})"
         if held else "-"),
        ("loss", number(held.get("loss"))), ("perplexity", number(held.get("perplexity"))),
        ("bits per character", number(held.get("bits_per_character"))),
        ("generation speed", f"{number(speed.get('tokens_per_s'))} tokens/s" if speed else "-"),
        ("time to first token", f"{number((speed.get('ttft_ms') or {}).get('p50'))} ms (p50)" if speed else "-"),
        ("distinct-2 / repetition", f"{number(tokens.get('distinct_2'))} / {number(tokens.get('repetition_rate'))}"
         if tokens else "-"),
    ]


def evaluate(
    model: ModelArgument,
    prompts: Annotated[Optional[list[str]], typer.Option(
        "--prompt", help="A prompt for the generation statistics (repeatable; default: line beginnings of the "
                         "training text).")] = None,
    held_out: Annotated[Optional[Path], typer.Option(
        "--held-out", help="Text the model did not train on (default: the validation split of its training data).")]
    = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=1024, help="New tokens per prompt.")] = 64,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Measure a model: held-out loss, perplexity, bits per character, and generation statistics."""
    out = Output()
    held_out_text = read_text_file(held_out) if held_out is not None else None
    with gateway(url) as api:
        detail = resolve_model(api, model)
        chosen = list(prompts or []) or _training_prompts(api, detail)
        job_id = api.evaluate(detail["id"], prompts=chosen, held_out_text=held_out_text,
                              max_new_tokens=max_tokens)["job_id"]
        out.note(f"evaluation job {job_id} ...")
        # Followed to its end rather than `?wait=true`, which the gateway cuts off after its request timeout.
        final = check_outcome(follow_job(api, out, job_id, show=False).final, job_id)
    report = final["report"]
    if as_json:
        out.json({"job_id": job_id, "model_id": detail["id"], "status": "completed", "report": report})
        return
    out.fields(evaluation_rows(report), title=f"evaluation of {detail['name']} (job {job_id})")
    for sample in (report.get("generation") or {}).get("samples", []):
        out.line(f"\n{sample['prompt']}", "bold")
        out.line(sample["completion"])


def generate(
    model: ModelArgument,
    prompt: Annotated[str, typer.Argument(help="The text to continue (may be empty: \"\").", show_default=False)],
    stream: Annotated[bool, typer.Option("--stream", help="Print the tokens as they are generated.")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="New tokens, not counting the prompt.")] = 200,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=5.0, help="0 is greedy.")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1)] = None,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 1.0,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Same seed, same text.")] = None,
    url: UrlOption = DEFAULT_URL, as_json: JsonOption = False,
) -> None:
    """Continue a prompt with a trained model (the completion goes to stdout)."""
    out = Output()
    sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    sampling |= {k: v for k, v in (("top_k", top_k), ("seed", seed)) if v is not None}
    with gateway(url, timeout_s=600.0) as api:
        model_id = resolve_model(api, model)["id"]
        if not stream:
            result = api.generate(model_id, prompt, **sampling)
            if as_json:
                out.json(result)
                return
            if out.rich:
                out.out.print(prompt, style="dim", end="", markup=False, highlight=False)
            out.raw(result["text"] + "\n")
            out.note(f"{result['completion_tokens']} tokens in {result['total_ms'] / 1000:.2f}s "
                     f"({number(result.get('tokens_per_s'))} tokens/s)")
            for warning in result.get("warnings", []):
                out.note(f"note: {warning}")
            return
        stream_generation(api, out, model_id, prompt, as_json=as_json, **sampling)


def stream_generation(api: Client, out: Output, model_id: str, prompt: str, *, as_json: bool = False,
                      echo_prompt: bool = False, **sampling: Any) -> dict[str, Any]:
    """Print a generation's text as it arrives (after the prompt, dimmed, on a terminal or with `echo_prompt`);
    returns its GenerationCompleted event."""
    if out.rich and not as_json:
        out.out.print(prompt, style="dim", end="", markup=False, highlight=False)
    elif echo_prompt and not as_json:
        out.raw(prompt)
    try:
        for event in api.generate_stream(model_id, prompt, **sampling):
            if as_json:
                out.json_line(event)
            elif event["type"] == "TokensGenerated":
                out.raw(event["text"])
            if event["type"] == "GenerationFailed":
                raise JobFailed(f"the generation failed: {event.get('reason')}")
            if event["type"] == "GenerationCompleted":
                if not as_json:
                    out.raw("\n")
                    out.note(f"{event['completion_tokens']} tokens in {event['total_ms'] / 1000:.2f}s "
                             f"({number(event.get('tokens_per_s'))} tokens/s)")
                    for warning in event.get("warnings", []):
                        out.note(f"note: {warning}")
                return event
    except KeyboardInterrupt:
        out.raw("\n")
        raise Stopped("stopped") from None
    raise JobFailed("the generation stream ended without a result; is an agents worker running?")
