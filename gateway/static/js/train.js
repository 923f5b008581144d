// The form that starts a training run: the text (a file or pasted), the tokenizer, a preset and overrides.
//
// The presets and every hyperparameter, with its meaning, default and bounds, come from the API
// (`GET /api/v1/presets`, read from the model library itself): the form lists what a request may say.
// A file is uploaded first (`POST /api/v1/datasets`, multipart) and referred to by id; pasted text goes inline.
// The API validates everything; its errors appear beside the field they name.

import { get, post } from "./api.js";
import { clear, errorText, h } from "./dom.js";
import { clearErrors, field, formError, numberOf, showError } from "./forms.js";

// The ones shown first; the others sit under "every hyperparameter".
const COMMON = ["max_iters", "learning_rate", "batch_size", "context_length", "d_model", "num_heads", "num_blocks",
                "dropout"];

/** An input for one hyperparameter, blank for "the preset's value": a select for choices and booleans. */
function overrideInput(spec) {
  const common = { name: spec.name, "data-field": `hyperparameters.${spec.name}` };
  if (spec.choices || spec.type === "bool") {
    const choices = spec.choices || ["true", "false"];
    return h("select", common, h("option", { value: "" }, "preset"),
      choices.map((choice) => h("option", { value: choice }, choice)));
  }
  const integer = spec.type.startsWith("int");
  return h("input", { type: "number", step: integer ? "1" : "any", placeholder: "preset", ...common });
}

function overrideValue(spec, input) {
  if (input.tagName === "SELECT") {
    if (input.value === "") return undefined;
    return spec.type === "bool" ? input.value === "true" : input.value;
  }
  return numberOf(input);
}

function hint(spec) {
  const values = spec.bounds || (spec.choices ? spec.choices.join(", ") : "");
  const also = spec.aliases.length ? `; also ${spec.aliases.join(", ")}` : "";
  return `${spec.help}. Default ${spec.default}${values ? `; ${values}` : ""}${also}.`;
}

export async function trainPage(view) {
  clear(view, h("h1", {}, "Train a model"), h("p", { class: "muted" }, "Loading…"));
  let doc;
  try {
    doc = await get("/api/v1/presets");
  } catch (error) {
    clear(view, h("h1", {}, "Train a model"), errorText(error.message));
    return () => {};
  }
  const name = h("input", { type: "text", name: "name", "data-field": "name", autocomplete: "off",
                            placeholder: "e.g. shakespeare-char" });
  const description = h("input", { type: "text", name: "description", "data-field": "description" });
  const pasteChoice = h("input", { type: "radio", name: "source", value: "text", checked: true });
  const fileChoice = h("input", { type: "radio", name: "source", value: "file" });
  const text = h("textarea", { name: "text", rows: "8", "data-field": "dataset.text",
                               placeholder: "Paste the training text here" });
  const file = h("input", { type: "file", name: "file", accept: ".txt,text/plain", "data-field": "file" });
  const textField = field("Training text", text, { wide: true });
  const fileField = field("Text file (UTF-8)", file, { wide: true, hint: "Uploaded once, then trained on." });
  const source = h("fieldset", { class: "field wide choice", "data-field": "dataset" },
    h("legend", {}, "Dataset"),
    h("label", {}, pasteChoice, " Paste text"), h("label", {}, fileChoice, " Upload a file"));
  source.fieldError = h("p", { class: "field-error", role: "alert", hidden: true });
  source.append(source.fieldError);
  const tokenizer = h("select", { name: "tokenizer", "data-field": "tokenizer" },
    h("option", { value: "char" }, "char: one token per character"),
    h("option", { value: "word" }, "word: one token per word"),
    h("option", { value: "bpe" }, "bpe: byte-pair encoding"));
  const vocab = h("input", { type: "number", min: "1", step: "1", "data-field": "tokenizer_options" });
  const vocabField = field("Vocabulary size", vocab, { hint: "Blank: the tokenizer's default." });
  const preset = h("select", { name: "preset", "data-field": "hyperparameters.preset" },
    doc.presets.map((p) => h("option", { value: p.name, selected: p.name === doc.default },
      `${p.name}: ${p.about}`)));
  const overrides = doc.hyperparameters.map((spec) => [spec, overrideInput(spec)]);
  const shown = (common) => overrides.filter(([spec]) => COMMON.includes(spec.name) === common)
    .map(([spec, input]) => field(spec.name, input, { hint: hint(spec) }));
  const submit = h("button", { type: "submit" }, "Start training");
  const status = h("p", { class: "muted", id: "train-status" });

  const showSource = () => {
    const upload = fileChoice.checked;
    textField.hidden = upload;
    fileField.hidden = !upload;
  };
  const showVocab = () => { vocabField.hidden = tokenizer.value === "char"; };
  pasteChoice.addEventListener("change", showSource);
  fileChoice.addEventListener("change", showSource);
  tokenizer.addEventListener("change", showVocab);

  const form = h("form", { class: "form-grid", id: "train-form", novalidate: true },
    field("Name", name), field("Description", description),
    source, textField, fileField,
    field("Tokenizer", tokenizer), vocabField,
    h("h3", { class: "wide" }, "Hyperparameters"),
    field("Preset", preset, { hint: "Blank fields below keep the preset's values." }),
    shown(true),
    h("details", { class: "wide", id: "every-hyperparameter" }, h("summary", {}, "Every hyperparameter"),
      h("div", { class: "form-grid" }, shown(false))),
    h("div", { class: "field wide buttons" }, submit, status),
    formError());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    submit.disabled = true;
    try {
      const hyperparameters = { preset: preset.value };
      for (const [spec, input] of overrides) {
        const value = overrideValue(spec, input);
        if (value !== undefined) hyperparameters[spec.name] = value;
      }
      const options = {};
      const size = numberOf(vocab);
      if (size !== undefined && tokenizer.value !== "char") options.vocab_size = size;
      let dataset;
      if (fileChoice.checked) {
        if (!file.files.length) {
          showError(form, { message: "choose a text file to upload", field: "file" });
          return;
        }
        status.textContent = "Uploading…";
        const upload = new FormData();
        upload.append("file", file.files[0]);
        upload.append("name", file.files[0].name);
        dataset = { id: (await post("/api/v1/datasets", upload)).id };
      } else {
        dataset = { text: text.value };
      }
      status.textContent = "Submitting…";
      const submitted = await post("/api/v1/models", {
        name: name.value, description: description.value, dataset, tokenizer: tokenizer.value,
        tokenizer_options: options, hyperparameters,
      });
      window.location.hash = `#/jobs/${submitted.job_id}`;
    } catch (error) {
      status.textContent = "";
      showError(form, error);
    } finally {
      submit.disabled = false;
    }
  });

  showSource();
  showVocab();
  clear(view, h("h1", {}, "Train a model"),
    h("section", { class: "card" }, form));
  return () => {};
}
