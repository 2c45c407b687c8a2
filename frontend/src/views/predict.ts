import { api } from "../lib/api";
import { $, formValues, h, render, showFieldErrors } from "../lib/dom";
import { classLabels, className, featureFields, IRIS_CLASSES, IRIS_FEATURES, parsePrediction, parseTarget } from "../lib/forms";
import type { FeatureField } from "../lib/forms";
import type { Deployment, InferenceResponse, RegisteredModel } from "../lib/types";

const IRIS_DEFAULT: FeatureField[] = IRIS_FEATURES.map((f) => ({ ...f }));

function resultView(r: InferenceResponse, classes: readonly string[]): HTMLElement {
  const pred = r.predictions[0];
  const probs = r.probabilities?.[0] ?? [];
  return h(
    "div",
    { class: "prediction", dataset: { version: r.model_version } },
    h("p", { class: "pred-class" }, "Class: ", h("strong", { id: "pred-class" }, className(pred, classes))),
    probs.length
      ? h(
          "ul",
          { class: "probs", "aria-label": "Class probabilities" },
          probs.map((p, i) =>
            h(
              "li",
              null,
              h("span", { class: "prob-label" }, className(i, classes)),
              h("meter", { min: 0, max: 1, value: p, "aria-label": `${className(i, classes)} probability` }),
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

function featureInputs(fields: FeatureField[] | null): HTMLElement[] {
  if (!fields) {
    return [
      h(
        "label",
        { class: "field wide" },
        h("span", null, "Feature values (comma-separated; this version records no feature names)"),
        h("input", { name: "values", type: "text", required: true, placeholder: "5.1, 3.5, 1.4, 0.2" }),
      ),
    ];
  }
  return fields.map((f) =>
    h(
      "label",
      { class: "field" },
      h("span", null, f.label),
      h("input", { name: f.name, type: "number", inputmode: "decimal", step: "any", value: f.example, required: true }),
    ),
  );
}

export function mountPredict(): void {
  let models: RegisteredModel[] = [];
  let deployments: Deployment[] = [];
  let fields: FeatureField[] | null = IRIS_DEFAULT;

  const target = h("select", { name: "target", id: "predict-target", "aria-label": "Model or deployment" },
    h("option", { value: "" }, "Default model (champion)")) as HTMLSelectElement;
  const version = h("select", { name: "version", id: "predict-version", "aria-label": "Version or alias" }) as HTMLSelectElement;
  const versionField = h("label", { class: "field" }, h("span", null, "Version"), version);
  const featureBox = h("div", { class: "fields", id: "predict-features" }, featureInputs(fields));
  const form = h(
    "form",
    { id: "predict-form", class: "form", novalidate: true },
    h("div", { class: "fields" }, h("label", { class: "field" }, h("span", null, "Serve with"), target), versionField),
    featureBox,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, "Predict")),
  ) as HTMLFormElement;
  const out = h("div", { id: "predict-result", "aria-live": "polite" });
  render($("#predict-root"), form, out);

  const chosenModel = (): RegisteredModel | undefined =>
    target.value.startsWith("model:") ? models.find((m) => m.name === target.value.slice(6)) : undefined;

  function chosenVersion() {
    if (target.value.startsWith("deployment:")) {
      const d = deployments.find((x) => `${x.namespace ?? ""}/${x.name}` === target.value.slice(11));
      const m = models.find((x) => x.name === d?.spec.model.name);
      return m?.versions?.find((v) => v.version === d?.status?.resolvedVersion);
    }
    const m = chosenModel();
    if (!m) return undefined;
    const v = version.value.startsWith("@") ? m.aliases?.[version.value.slice(1)] : version.value;
    return m.versions?.find((x) => x.version === v) ?? m.versions?.[0];
  }

  function refreshVersions(): void {
    const m = chosenModel();
    versionField.hidden = !m;
    if (!m) return;
    const aliases = Object.entries(m.aliases ?? {}).map(([a, v]) => h("option", { value: `@${a}` }, `@${a} (v${v})`));
    const versions = (m.versions ?? []).map((v) => h("option", { value: v.version }, `v${v.version}`));
    render(version, ...aliases, ...versions);
  }

  function refreshFields(): void {
    const v = chosenVersion();
    fields = target.value === "" ? IRIS_DEFAULT : featureFields(v);
    render(featureBox, featureInputs(fields));
  }

  async function load(): Promise<void> {
    const [m, d] = await Promise.allSettled([api.models(), api.deployments()]);
    models = m.status === "fulfilled" ? m.value : [];
    deployments = d.status === "fulfilled" ? d.value : [];
    const keep = target.value;
    render(
      target,
      h("option", { value: "" }, "Default model (champion)"),
      models.length ? h("optgroup", { label: "Models" }, models.map((x) => h("option", { value: `model:${x.name}` }, x.name))) : null,
      deployments.length
        ? h("optgroup", { label: "Deployments" }, deployments.map((x) =>
            h("option", { value: `deployment:${x.namespace ?? ""}/${x.name}` },
              `${x.namespace ?? ""}/${x.name} (${x.spec.model.name}${x.status?.resolvedVersion ? ` v${x.status.resolvedVersion}` : ""})`)))
        : null,
    );
    target.value = [...target.options].some((o) => o.value === keep) ? keep : "";
    refreshVersions();
    refreshFields();
  }

  target.addEventListener("change", () => {
    refreshVersions();
    refreshFields();
  });
  version.addEventListener("change", refreshFields);
  target.addEventListener("focus", () => void load().catch(() => undefined));
  versionField.hidden = true;
  void load().catch(() => undefined);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const raw = formValues(form);
    const req = parsePrediction(raw, fields, parseTarget(target.value, version.value));
    if (!req.ok) {
      showFieldErrors(form, req.errors);
      return;
    }
    showFieldErrors(form, {});
    const btn = form.querySelector("button[type=submit]") as HTMLButtonElement;
    btn.disabled = true;
    render(out, h("p", { class: "muted" }, "Predicting…"));
    const classes = target.value === "" ? IRIS_CLASSES : classLabels(fields);
    try {
      render(out, resultView(await api.inference(req.value), classes));
    } catch (e) {
      render(out, h("p", { class: "error", role: "alert" }, `Prediction failed: ${e instanceof Error ? e.message : String(e)}`));
    } finally {
      btn.disabled = false;
    }
  });
}
