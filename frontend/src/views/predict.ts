import { api } from "../lib/api";
import { $, formValues, h, render, showFieldErrors } from "../lib/dom";
import { className, IRIS_FEATURES, parsePrediction } from "../lib/forms";
import type { InferenceResponse } from "../lib/types";

function resultView(r: InferenceResponse): HTMLElement {
  const pred = r.predictions[0];
  const probs = r.probabilities?.[0] ?? [];
  return h(
    "div",
    { class: "prediction", dataset: { version: r.model_version } },
    h("p", { class: "pred-class" }, "Class: ", h("strong", { id: "pred-class" }, className(pred))),
    probs.length
      ? h(
          "ul",
          { class: "probs", "aria-label": "Class probabilities" },
          probs.map((p, i) =>
            h(
              "li",
              null,
              h("span", { class: "prob-label" }, className(i)),
              h("meter", { min: 0, max: 1, value: p, "aria-label": `${className(i)} probability` }),
              h("span", { class: "prob-value" }, `${(p * 100).toFixed(1)}%`),
            ),
          ),
        )
      : null,
    h(
      "p",
      { class: "muted" },
      `${r.model_name} v${r.model_version}`,
      r.latency_ms != null ? ` · ${r.latency_ms.toFixed(1)} ms` : "",
      r.attempts && r.attempts > 1 ? ` · ${r.attempts} attempts` : "",
    ),
  );
}

export function mountPredict(): void {
  const form = h(
    "form",
    { id: "predict-form", class: "form", novalidate: true },
    h(
      "div",
      { class: "fields" },
      IRIS_FEATURES.map((f) =>
        h(
          "label",
          { class: "field" },
          h("span", null, f.label),
          h("input", { name: f.name, type: "number", inputmode: "decimal", step: 0.1, min: 0, max: 100, value: f.example, required: true }),
        ),
      ),
      h(
        "label",
        { class: "field" },
        h("span", null, "Model version"),
        h("input", { name: "model_version", type: "text", inputmode: "numeric", placeholder: "champion" }),
      ),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, "Predict")),
  );
  const out = h("div", { id: "predict-result", "aria-live": "polite" });
  render($("#predict-root"), form, out);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const req = parsePrediction(formValues(form));
    if (!req.ok) {
      showFieldErrors(form, req.errors);
      return;
    }
    showFieldErrors(form, {});
    const btn = form.querySelector("button[type=submit]") as HTMLButtonElement;
    btn.disabled = true;
    render(out, h("p", { class: "muted" }, "Predicting…"));
    try {
      render(out, resultView(await api.inference(req.value)));
    } catch (e) {
      render(out, h("p", { class: "error", role: "alert" }, `Prediction failed: ${e instanceof Error ? e.message : String(e)}`));
    } finally {
      btn.disabled = false;
    }
  });
}
