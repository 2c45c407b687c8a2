// Model packages in the models panel: "Upload a model package" (a .zip as a new version) and, on each
// version, "Save as new version" (the copy route). Both take the client, so tests can drive them.
import type { ApiClient, UploadRoute } from "../lib/api";
import { formValues, h, onValidSubmit, outcome, showFieldErrors } from "../lib/dom";
import { describeUploadFailure, fileError, formatBytes, parseCopy, parseUpload, uploadFormData, uploadPath } from "../lib/upload";
import type { ModelVersion } from "../lib/types";

const PACKAGE_HINT =
  "A zipped MLflow model directory (MLmodel at the root or in one top-level folder), or a seed-000 package " +
  "(meta.json, app.py, requirements.txt and the model file at the zip's root).";

export interface UploadFormOptions {
  client: ApiClient;
  route: UploadRoute;
  /** After a 201 (e.g. refresh the models list). */
  onUploaded?: (name: string, version: ModelVersion) => Promise<void> | void;
}

export function uploadForm({ client, route, onUploaded }: UploadFormOptions): HTMLElement {
  // the largest upload the API stated (openapi), or named in a 413; null: not known, the API decides
  let maxBytes = route.maxBytes;
  const limitHint = h("small", { class: "muted", id: "upload-limit" });
  const paintLimit = () => (limitHint.textContent = maxBytes != null ? `At most ${formatBytes(maxBytes)}.` : "");
  paintLimit();
  const fileInput = h("input", { name: "file", type: "file", accept: ".zip,application/zip", required: true });
  const submit = h("button", { type: "submit", class: "btn primary" }, "Upload");
  const form = h(
    "form",
    { id: "upload-form", class: "form", novalidate: true },
    h(
      "div",
      { class: "fields" },
      h(
        "label",
        { class: "field" },
        h("span", null, "Model name"),
        h("input", { name: "name", type: "text", required: true, list: "model-names", autocomplete: "off", placeholder: "new or existing", dataset: { noPrefill: "" } }),
      ),
      h("label", { class: "field" }, h("span", null, "Package (.zip)"), fileInput, limitHint),
      h("label", { class: "field" }, h("span", null, "Aliases (optional)"), h("input", { name: "aliases", type: "text", placeholder: "e.g. candidate", autocomplete: "off" })),
      h("label", { class: "field" }, h("span", null, "Tags (optional, key=value)"), h("input", { name: "tags", type: "text", autocomplete: "off" })),
    ),
    h("div", { class: "stack" }, h("label", { class: "field" }, h("span", null, "Description (optional)"), h("textarea", { name: "description", rows: 2 }))),
    h("p", { class: "muted small" }, PACKAGE_HINT),
    h("div", { class: "actions" }, submit),
  );
  const { note, list, show } = outcome("upload");

  // say at once when the chosen file will not do
  fileInput.addEventListener("change", () => {
    const err = fileInput.files?.[0] ? fileError(fileInput.files[0], maxBytes) : null;
    showFieldErrors(form, err ? { file: err } : {});
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    const parsed = parseUpload(formValues(form), fileInput.files?.[0] ?? null, maxBytes);
    if (!parsed.ok) {
      showFieldErrors(form, parsed.errors);
      show("", "busy");
      return;
    }
    showFieldErrors(form, {});
    const req = parsed.value;
    const path = uploadPath(route.path, req.name);
    if (!path) {
      show(`This API takes model packages at ${route.path}; see the API docs (/api/docs).`, "error");
      return;
    }
    const what = `${req.file.name} (${formatBytes(req.file.size)})`;
    const started = Date.now();
    const progress = () => {
      const s = Math.floor((Date.now() - started) / 1000);
      show(`Uploading ${what} to ${req.name} and checking it…${s ? ` ${s} s` : ""}`, "busy");
    };
    progress();
    const timer = setInterval(progress, 1000);
    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const version = await client.uploadPackage(path, uploadFormData(req));
      clearInterval(timer);
      show(`Registered ${req.name} v${version.version}`, "ok");
      fileInput.value = "";
      await onUploaded?.(req.name, version);
    } catch (e) {
      clearInterval(timer);
      const failure = describeUploadFailure(e);
      if (failure.limit != null) {
        maxBytes = failure.limit;
        paintLimit();
      }
      show(`Not uploaded: ${failure.message}`, "error", failure.problems);
    } finally {
      clearInterval(timer);
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });

  return h("details", { id: "upload" }, h("summary", null, "Upload a model package"), form, note, list);
}

export interface CopyFormOptions {
  client: ApiClient;
  model: string;
  version: ModelVersion;
  /** After a 201, with the new version (e.g. say so and refresh the models list). */
  onCopied?: (copy: ModelVersion) => Promise<void> | void;
}

/** "Save as new version" on a version: the same artifacts as a new version, optionally re-described. */
export function copyForm({ client, model, version, onCopied }: CopyFormOptions): HTMLElement {
  const id = `copy-${model}-v${version.version}`;
  const submit = h("button", { type: "submit", class: "btn" }, "Save as new version");
  const form = h(
    "form",
    { id, class: "form stack", novalidate: true },
    h("label", { class: "field" }, h("span", null, "Description of the new version"), h("textarea", { name: "description", rows: 2 }, version.description ?? "")),
    h("label", { class: "field" }, h("span", null, "Aliases to point at it (optional)"), h("input", { name: "aliases", type: "text", autocomplete: "off", placeholder: "e.g. candidate" })),
    h("div", null, submit),
  );
  const { note, list, show } = outcome(id);
  onValidSubmit({
    form, submit, show, parse: (values) => parseCopy(values, version.description), busy: "Saving…",
    run: async (value) => {
      const copy = await client.copyVersion(model, version.version, value);
      show(`Saved v${version.version} as v${copy.version}.`, "ok");
      await onCopied?.(copy);
    },
    fail: (e) => {
      const failure = describeUploadFailure(e);
      show(`Not saved: ${failure.message}`, "error", failure.problems);
    },
  });
  return h("details", { class: "copy" }, h("summary", null, "Save as new version"), form, note, list);
}
