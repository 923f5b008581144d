// The form that starts a training run: the text (a file or pasted), the tokenizer, a preset and overrides.
//
// A file is uploaded first (`POST /api/v1/datasets`, multipart) and referred to by id; pasted text goes inline.
// The API validates everything; its errors appear beside the field they name.

import { post } from "./api.js";
import { clear, h } from "./dom.js";
import { clearErrors, field, formError, numberOf, showError } from "./forms.js";

const PRESETS = [
  ["tiny", "tiny: a few seconds on a CPU"],
  ["cpu-baby", "cpu-baby: a small model for a CPU"],
  ["classic", "classic: the first service's defaults"],
  ["small", "small: for a GPU"],
];

// Overrides of the preset; blank keeps the preset's value.
const HYPERPARAMETERS = [
  ["max_iters", "Iterations", { min: "1", step: "1" }],
  ["learning_rate", "Learning rate", { min: "0", step: "any" }],
  ["batch_size", "Batch size", { min: "1", step: "1" }],
  ["context_length", "Context length", { min: "1", step: "1" }],
  ["d_model", "Embedding size (d_model)", { min: "1", step: "1" }],
  ["num_heads", "Attention heads", { min: "1", step: "1" }],
  ["num_blocks", "Blocks", { min: "1", step: "1" }],
  ["dropout", "Dropout", { min: "0", max: "1", step: "any" }],
  ["eval_every", "Validate every (steps)", { min: "1", step: "1" }],
  ["warmup", "Warm-up steps", { min: "0", step: "1" }],
];

export function trainPage(view) {
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
    PRESETS.map(([value, label]) => h("option", { value }, label)));
  const overrides = HYPERPARAMETERS.map(([key, label, attrs]) => [key, label,
    h("input", { type: "number", name: key, "data-field": `hyperparameters.${key}`, placeholder: "preset",
                 ...attrs })]);
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
    overrides.map(([, label, input]) => field(label, input)),
    h("div", { class: "field wide buttons" }, submit, status),
    formError());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    submit.disabled = true;
    try {
      const hyperparameters = { preset: preset.value };
      for (const [key, , input] of overrides) {
        const value = numberOf(input);
        if (value !== undefined) hyperparameters[key] = value;
      }
      const options = {};
      const size = numberOf(vocab);
      if (size !== undefined && tokenizer.value === "bpe") options.vocab_size = size;
      if (size !== undefined && tokenizer.value === "word") options.max_vocab = size;
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
