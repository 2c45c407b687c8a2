import { api, ApiError } from "../lib/api";
import { $, formValues, h, localTime, render, showFieldErrors } from "../lib/dom";
import { HYPERPARAMETER_DEFAULTS as D, parseHyperparameters } from "../lib/forms";
import { formatMetric, metricEntries } from "../lib/metrics";
import type { TrainingJob } from "../lib/types";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1000;

function num(name: string, label: string, value: number | string, attrs: Record<string, unknown> = {}, hint?: string) {
  return h(
    "label",
    { class: "field" },
    h("span", null, label),
    h("input", { name, type: "number", inputmode: "decimal", value, ...attrs }),
    hint ? h("small", { class: "muted" }, hint) : null,
  );
}

function cancelButton(job: TrainingJob, onCancelled: (job: TrainingJob) => void): HTMLElement {
  const btn = h("button", { type: "button", class: "btn", "aria-label": `Cancel job ${job.job_id.slice(0, 8)}` }, "Cancel") as HTMLButtonElement;
  btn.addEventListener("click", async () => {
    if (!confirm(`Cancel training job ${job.job_id.slice(0, 8)}?`)) return;
    btn.disabled = true;
    try {
      onCancelled(await api.cancelTraining(job.job_id));
    } catch (e) {
      btn.disabled = false;
      btn.after(h("p", { class: "error", role: "alert" }, `Not cancelled: ${e instanceof Error ? e.message : String(e)}`));
    }
  });
  return btn;
}

function jobView(job: TrainingJob, onCancelled?: (job: TrainingJob) => void): HTMLElement {
  const done = TERMINAL.has(job.status);
  const primary = job.task === "regression" ? "r2" : "accuracy";
  return h(
    "div",
    { class: `job job-${job.status}`, dataset: { jobId: job.job_id, status: job.status } },
    h(
      "p",
      null,
      h("strong", null, `Job ${job.job_id.slice(0, 8)}`),
      " ",
      h("span", { class: `pill st-${job.status}` }, job.status),
      job.champion ? h("span", { class: "pill st-champion" }, "champion") : null,
    ),
    done ? null : h("progress", { "aria-label": `Training job ${job.status}` }),
    done || !onCancelled ? null : h("div", { class: "actions" }, cancelButton(job, onCancelled)),
    job.version ? h("p", null, `Registered ${job.model_name ?? "model"} version ${job.version}`) : null,
    job.metrics && Object.keys(job.metrics).length
      ? h("dl", { class: "kv" }, metricEntries(job.metrics, primary).map(([k, v]) => [h("dt", null, k), h("dd", null, formatMetric(v))]))
      : null,
    job.error ? h("p", { class: "error", role: "alert" }, job.error) : null,
    job.finished_at ? h("p", { class: "muted" }, `Finished ${localTime(job.finished_at)}`) : null,
  );
}

export function mountTrain(onFinished: (job: TrainingJob) => void): void {
  const form = h(
    "form",
    { id: "train-form", class: "form", novalidate: true },
    h(
      "div",
      { class: "fields" },
      num("n_estimators", "Trees (n_estimators)", D.n_estimators, { min: 1, max: 2000, step: 1, required: true }),
      num("max_depth", "Max depth", "", { min: 1, max: 100, step: 1, placeholder: "unlimited" }),
      num("min_samples_split", "Min samples split", D.min_samples_split, { min: 2, max: 1000, step: 1 }),
      num("min_samples_leaf", "Min samples leaf", D.min_samples_leaf, { min: 1, max: 1000, step: 1 }),
      h(
        "label",
        { class: "field" },
        h("span", null, "Max features"),
        h("select", { name: "max_features" }, ["sqrt", "log2", "all"].map((v) => h("option", { value: v, selected: v === D.max_features }, v))),
      ),
      num("random_state", "Random seed", D.random_state, { min: 0, step: 1 }),
      num("test_size", "Test fraction", D.test_size, { min: 0.05, max: 0.5, step: 0.05 }),
    ),
    h(
      "details",
      null,
      h("summary", null, "Data"),
      h("label", { class: "field" }, h("span", null, "Data URI"), h("input", { name: "data_uri", type: "text", placeholder: "server default (s3://…/iris.csv)" })),
      h("label", { class: "field" }, h("span", null, "Target column"), h("input", { name: "target", type: "text", placeholder: "server default" })),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, "Start training")),
  );
  const status = h("div", { id: "train-status", "aria-live": "polite" });
  render($("#train-root"), form, status);

  let polling = 0;
  const poll = async (jobId: string, run: number) => {
    while (run === polling) {
      try {
        const job = await api.training(jobId);
        if (run !== polling) return;
        render(status, jobView(job, (cancelled) => render(status, jobView(cancelled))));
        if (TERMINAL.has(job.status)) {
          onFinished(job);
          return;
        }
      } catch (e) {
        if (run !== polling) return;
        if (e instanceof ApiError && e.status === 404) {
          render(status, h("p", { class: "error", role: "alert" }, `Job ${jobId} is gone: ${e.message}`));
          return;
        }
        status.querySelector(".poll-error")?.remove();
        status.append(h("p", { class: "muted poll-error" }, `Still trying: ${e instanceof Error ? e.message : String(e)}`));
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const raw = formValues(form);
    const hp = parseHyperparameters(raw);
    if (!hp.ok) {
      showFieldErrors(form, hp.errors);
      return;
    }
    showFieldErrors(form, {});
    const btn = form.querySelector("button[type=submit]") as HTMLButtonElement;
    btn.disabled = true;
    try {
      const body: Parameters<typeof api.trigger>[0] = { hyperparameters: hp.value };
      if (raw.data_uri?.trim()) body.data_uri = raw.data_uri.trim();
      if (raw.target?.trim()) body.target = raw.target.trim();
      const job = await api.trigger(body);
      render(status, jobView(job, (cancelled) => render(status, jobView(cancelled))));
      void poll(job.job_id, ++polling);
    } catch (e) {
      render(status, h("p", { class: "error", role: "alert" }, `Training was not started: ${e instanceof Error ? e.message : String(e)}`));
    } finally {
      btn.disabled = false;
    }
  });
}
