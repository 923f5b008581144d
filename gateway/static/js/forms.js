// Form fields with a place for their error, and API errors put beside the field they name.
//
// Every input that maps to a request field carries `data-field` with the API's dotted name (`name`,
// `hyperparameters.d_model`). A 422 names such a field; the message goes beside the closest one, or to the
// form's general error line when no field matches.

import { h } from "./dom.js";

/** A labelled input (or select/textarea) with its hint and an empty error line. */
export function field(label, control, { hint = "", wide = false } = {}) {
  const id = control.id || `f-${(control.dataset.field || label).replace(/[^a-z0-9]+/gi, "-")}`;
  control.id = id;
  const error = h("p", { class: "field-error", role: "alert", hidden: true });
  control.fieldError = error;
  return h("div", { class: wide ? "field wide" : "field", "data-for": control.dataset.field || "" },
    h("label", { for: id }, label), control, hint ? h("p", { class: "hint" }, hint) : null, error);
}

export function clearErrors(form) {
  for (const error of form.querySelectorAll(".field-error, .form-error")) {
    error.textContent = "";
    error.hidden = true;
  }
  for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}

function controlFor(form, name) {
  let candidate = name;
  while (candidate) {
    const control = form.querySelector(`[data-field="${CSS.escape(candidate)}"]`);
    if (control && !control.closest("[hidden]")) return control;
    const dot = candidate.lastIndexOf(".");
    candidate = dot > 0 ? candidate.slice(0, dot) : "";
  }
  return null;
}

/** Show an error from the API beside the field it names (or on the form's general line); focus that field. */
export function showError(form, error) {
  const control = error.field ? controlFor(form, error.field) : null;
  if (control && control.fieldError) {
    control.fieldError.textContent = error.message;
    control.fieldError.hidden = false;
    control.setAttribute("aria-invalid", "true");
    control.focus();
    return control;
  }
  const general = form.querySelector(".form-error");
  general.textContent = error.message;
  general.hidden = false;
  return null;
}

export function formError() {
  return h("p", { class: "form-error error", role: "alert", hidden: true });
}

/** The value of a number input, or undefined when it is blank (then the default applies). */
export function numberOf(input) {
  const text = input.value.trim();
  return text === "" ? undefined : Number(text);
}
