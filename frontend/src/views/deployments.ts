import { api, ApiError, loadFailure } from "../lib/api";
import { $, formValues, h, render, showFieldErrors } from "../lib/dom";
import { parseDeployment } from "../lib/forms";
import { deploymentHash } from "../lib/series";
import type { Deployment } from "../lib/types";

function modelRef(d: Deployment): string {
  const m = d.spec?.model;
  if (!m) return "–";
  return `${m.name}${m.version ? ` v${m.version}` : m.alias ? `@${m.alias}` : ""}`;
}

/** "v3", with a canary "v3 + canary v4 (10 %)" (the canary gets exactly that share of requests), with a shadow
 * "v3 + shadow v5 (20 % mirrored)" (a copy of that share goes to it; its answers are only compared). */
export function versionText(d: Deployment): string {
  const s = d.status ?? {};
  let text = s.resolvedVersion ? `v${s.resolvedVersion}` : "–";
  const c = d.spec?.canary;
  if (c) text += ` + canary v${s.canaryVersion ?? c.version} (${c.trafficPercent} %)`;
  const sh = d.spec?.shadow;
  if (sh) {
    const which = s.shadowVersion ? `v${s.shadowVersion}` : sh.version ? `v${sh.version}` : `@${sh.alias}`;
    text += ` + shadow ${which} (${sh.percent} % mirrored)`;
  }
  return text;
}

type CanaryClient = Pick<typeof api, "canary">;

/** Promote / Abort buttons of a deployment with a canary (none without one): one API call each. */
export function canaryButtons(d: Deployment, refresh: () => Promise<void>, client: CanaryClient = api): HTMLButtonElement[] {
  const c = d.spec?.canary;
  if (!c) return [];
  const button = (action: "promote" | "abort", label: string, question: string, cls: string) =>
    h(
      "button",
      {
        type: "button",
        class: `btn ${cls}`,
        dataset: { canaryAction: action },
        "aria-label": `${label} of deployment ${d.name}`,
        onclick: async (ev: Event) => {
          if (!window.confirm(question)) return;
          (ev.currentTarget as HTMLButtonElement).disabled = true;
          try {
            await client.canary(action, d.name, d.namespace);
          } catch (e) {
            window.alert(`${label} failed: ${e instanceof Error ? e.message : String(e)}`);
          }
          await refresh();
        },
      },
      label,
    );
  return [
    button("promote", "Promote canary", `Promote canary v${c.version} of ${d.name}: it becomes the stable version and takes all traffic?`, "primary"),
    button("abort", "Abort canary", `Abort canary v${c.version} of ${d.name}: it is removed and the stable version takes all traffic?`, "ghost"),
  ];
}

export function row(d: Deployment, refresh: () => Promise<void>, client: CanaryClient = api): HTMLTableRowElement {
  const s = d.status ?? {};
  const phase = s.phase ?? "Pending";
  const failed = s.conditions?.find((c) => c.status === "False" && c.message);
  return h(
    "tr",
    { dataset: { deployment: d.name, phase } },
    h("th", { scope: "row" }, d.namespace ? h("span", { class: "muted" }, `${d.namespace}/`) : null, h("a", { href: deploymentHash(d.namespace, d.name), title: `Monitoring of ${d.name}` }, d.name)),
    h("td", null, modelRef(d)),
    h("td", null, versionText(d)),
    h("td", null, `${d.spec?.runtime ?? "pod"}${d.spec?.runtime !== "vm" && d.spec?.server ? `/${d.spec.server}` : ""}`),
    h("td", null, h("span", { class: `pill ph-${phase.toLowerCase()}`, title: failed?.message }, phase), phase === "Queued" && s.queuePosition != null ? ` #${s.queuePosition}` : ""),
    h("td", null, s.readyReplicas != null || s.replicas != null ? `${s.readyReplicas ?? 0}/${s.replicas ?? d.spec?.replicas ?? "?"}` : "–"),
    h("td", null, s.url ? h("a", { href: s.url, target: "_blank", rel: "noopener noreferrer" }, s.url) : "–"),
    h(
      "td",
      { class: "row-actions" },
      ...canaryButtons(d, refresh, client),
      h(
        "button",
        {
          type: "button",
          class: "btn danger",
          "aria-label": `Delete deployment ${d.name}`,
          onclick: async (ev: Event) => {
            if (!window.confirm(`Delete deployment ${d.name}?`)) return;
            (ev.currentTarget as HTMLButtonElement).disabled = true;
            try {
              await api.deleteDeployment(d.name, d.namespace);
            } catch (e) {
              window.alert(`Delete failed: ${e instanceof Error ? e.message : String(e)}`);
            }
            await refresh();
          },
        },
        "Delete",
      ),
    ),
  );
}

export function mountDeployments(): { refresh: () => Promise<void> } {
  const table = h("div", { class: "table-wrap" });
  const note = h("p", { class: "muted", role: "status" });
  const form = h(
    "form",
    { id: "deploy-form", class: "form", novalidate: true },
    h(
      "div",
      { class: "fields" },
      h("label", { class: "field" }, h("span", null, "Name"), h("input", { name: "name", type: "text", required: true, placeholder: "iris", autocomplete: "off" })),
      h("label", { class: "field" }, h("span", null, "Namespace"), h("input", { name: "namespace", type: "text", placeholder: "default" })),
      h("label", { class: "field" }, h("span", null, "Model"), h("input", { name: "model", type: "text", required: true, list: "model-names", autocomplete: "off" })),
      h(
        "fieldset",
        { class: "field" },
        h("legend", null, "Model reference"),
        h("label", { class: "inline" }, h("input", { type: "radio", name: "ref", value: "alias", checked: true }), " alias"),
        h("label", { class: "inline" }, h("input", { type: "radio", name: "ref", value: "version" }), " version"),
      ),
      h("label", { class: "field" }, h("span", null, "Alias or version"), h("input", { name: "ref_value", type: "text", value: "champion", required: true })),
      h("label", { class: "field" }, h("span", null, "Runtime"), h("select", { name: "runtime" }, h("option", { value: "pod" }, "pod"), h("option", { value: "vm" }, "vm (KubeVirt)"))),
      h("label", { class: "field" }, h("span", null, "Server (pod)"), h("select", { name: "server" }, h("option", { value: "onnx" }, "onnx"), h("option", { value: "rayserve" }, "rayserve"))),
      h("label", { class: "field" }, h("span", null, "Replicas"), h("input", { name: "replicas", type: "number", min: 0, max: 100, step: 1, value: 1 })),
      h(
        "fieldset",
        { class: "field vm-only", hidden: true },
        h("legend", null, "Virtual machine (KubeVirt)"),
        h("label", { class: "field" }, h("span", null, "containerDisk image"), h("input", { name: "vm_image", type: "text", placeholder: "quay.io/containerdisks/debian:12", autocomplete: "off" })),
        h("label", { class: "field" }, h("span", null, "Cores"), h("input", { name: "vm_cores", type: "number", min: 1, max: 64, step: 1, value: 1 })),
        h("label", { class: "field" }, h("span", null, "Memory"), h("input", { name: "vm_memory", type: "text", value: "2Gi" })),
      ),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, "Create deployment")),
  );
  // the server choice only applies to the pod runtime
  const runtime = form.querySelector<HTMLSelectElement>("select[name=runtime]")!;
  const server = form.querySelector<HTMLSelectElement>("select[name=server]")!;
  const vmFields = form.querySelector<HTMLFieldSetElement>("fieldset.vm-only")!;
  runtime.addEventListener("change", () => {
    server.disabled = runtime.value === "vm";
    vmFields.hidden = runtime.value !== "vm"; // a VM needs its image and size (spec.vm)
  });
  const formNote = h("p", { class: "form-note", role: "status" });
  const create = h("details", { class: "create" }, h("summary", null, "New deployment"), form, formNote);
  render($("#deployments-root"), note, table, create);

  const refresh = async () => {
    try {
      const items = await api.deployments();
      note.textContent = items.length ? "" : "No deployments. Create one below.";
      create.hidden = false;
      render(
        table,
        items.length
          ? h(
              "table",
              { class: "table" },
              h("caption", { class: "sr-only" }, "ModelDeployments"),
              h("thead", null, h("tr", null, ["Name", "Model", "Version", "Runtime", "Phase", "Ready", "URL", ""].map((c) => h("th", { scope: "col" }, c)))),
              h("tbody", null, items.map((d) => row(d, refresh))),
            )
          : null,
      );
    } catch (e) {
      render(table);
      if (e instanceof ApiError && e.unavailable) {
        note.textContent = `Deployments are not available on this API yet (HTTP ${e.status}).`;
        create.hidden = true;
      } else {
        note.textContent = loadFailure("deployments", e);
      }
    }
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const parsed = parseDeployment(formValues(form));
    if (!parsed.ok) {
      showFieldErrors(form, parsed.errors);
      return;
    }
    showFieldErrors(form, {});
    formNote.textContent = "Creating…";
    formNote.classList.remove("error");
    try {
      await api.createDeployment(parsed.value);
      formNote.textContent = `Created ${parsed.value.name}.`;
      await refresh();
    } catch (e) {
      formNote.textContent = `Not created: ${e instanceof Error ? e.message : String(e)}`;
      formNote.classList.add("error");
    }
  });
  $("#deployments-refresh").addEventListener("click", () => void refresh());
  return { refresh };
}
