"""A model leaves the system, as a user does it: `lfz up`, train, `lfz export`, then load the folder with
transformers and read the GGUF file back; greedy text from the exported model is the service's own greedy text, and
an option no format can express fails the job with the option named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli.conftest import corpus

transformers = pytest.importorskip("transformers", reason="the export is checked by loading it with transformers")
gguf = pytest.importorskip("gguf")


@pytest.fixture
def lfz(lfz_on_up):  # these tests drive `lfz up` on the embedded defaults, as a person does
    return lfz_on_up


def trained(lfz, tmp_path: Path, name: str, *settings: str) -> str:
    text = tmp_path / f"{name}.txt"
    text.write_text(corpus(200))
    done = lfz("train", "--data", str(text), "--name", name, "--preset", "tiny", "--max-iters", "30",
               "--tokenizer", "bpe", "--vocab-size", "300", *settings, "--follow", "--json")
    assert done.code == 0, done.err
    return name


def test_exported_to_transformers_the_model_writes_what_the_service_writes(lfz, tmp_path: Path):
    name = trained(lfz, tmp_path, "exported", "--set", "positions=learned", "--set", "context_length=64")
    folder = tmp_path / "hf"
    done = lfz("export", name, "--out", str(folder), "--json")
    assert done.code == 0, done.err
    listing = json.loads(done.out)
    assert listing["architecture"] == "GPT2LMHeadModel" and listing["format"] == "hf"
    assert {f["name"] for f in listing["files"]} >= {"config.json", "model.safetensors", "tokenizer.json"}
    for file in listing["files"]:
        assert (folder / file["name"]).stat().st_size == file["bytes"]

    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    prompt = "the cat"
    served = lfz("generate", name, prompt, "--max-tokens", "20", "--temperature", "0", "--json")
    assert served.code == 0, served.err
    completion = json.loads(served.out)["completions"][0]
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, do_sample=False, max_new_tokens=20, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    assert tokenizer.decode(new, skip_special_tokens=True) == completion["text"]
    assert len([t for t in new if t != tokenizer.eos_token_id]) == completion["completion_tokens"]


def test_an_exported_model_imports_and_generates_evaluates_and_trains_further(lfz, tmp_path: Path):
    name = trained(lfz, tmp_path, "original", "--set", "context_length=32")
    folder = tmp_path / "out"
    assert lfz("export", name, "--out", str(folder)).code == 0
    imported = lfz("import", str(folder), "--name", "imported", "--json")
    assert imported.code == 0, imported.err
    result = json.loads(imported.out)
    assert result["status"] == "completed" and result["architecture"] == "GPTNeoXForCausalLM"

    def greedy(model: str) -> dict:
        done = lfz("generate", model, "the dog", "--max-tokens", "12", "--temperature", "0", "--json")
        assert done.code == 0, done.err
        return json.loads(done.out)["completions"][0]

    assert greedy("imported") == greedy(name)
    again = lfz("import", str(folder), "--name", "imported")
    assert again.code != 0 and "exists already" in again.err
    evaluated = lfz("evaluate", "imported", "--held-out", str(tmp_path / "original.txt"), "--json")
    assert evaluated.code == 0, evaluated.err
    assert json.loads(evaluated.out)["report"]["held_out"]["perplexity"] > 0
    further = lfz("train", "--continue", "imported", "--data", str(tmp_path / "original.txt"), "--max-iters", "10",
                  "--follow", "--json")
    assert further.code == 0, further.err
    shown = json.loads(lfz("models", "show", "imported", "--json").out)
    assert shown["status"] == "completed" and shown["step"] == 10


def test_exported_to_gguf_the_file_reads_back(lfz, tmp_path: Path):
    name = trained(lfz, tmp_path, "rotary")
    done = lfz("export", name, "--out", str(tmp_path / "gguf"), "--format", "gguf", "--dtype", "float16", "--json")
    assert done.code == 0, done.err
    assert json.loads(done.out)["architecture"] == "gguf:gptneox"
    reader = gguf.GGUFReader(tmp_path / "gguf" / "model.gguf")
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "gptneox"
    assert any(t.name == "token_embd.weight" for t in reader.tensors)


def test_an_option_no_format_expresses_fails_the_export_by_name(lfz, tmp_path: Path):
    name = trained(lfz, tmp_path, "normed", "--set", "qk_norm=true")
    refused = lfz("export", name, "--out", str(tmp_path / "no"))
    assert refused.code != 0 and "qk_norm" in refused.err
    assert not (tmp_path / "no").exists()
    unknown = lfz("export", name, "--out", str(tmp_path / "no"), "--format", "onnx")
    assert unknown.code != 0 and "--format" in unknown.err
