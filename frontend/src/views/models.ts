import { api, findUploadRoute, loadFailure } from "../lib/api";
import { $, formValues, h, localTime, render } from "../lib/dom";
import { ALIAS_RULE, formatTags, parseTags } from "../lib/forms";
import { follows, MODEL_ALIAS } from "../lib/patterns";
import { formatMetric, metricEntries } from "../lib/metrics";
import type { ModelVersion, RegisteredModel } from "../lib/types";
import { uploadPath } from "../lib/upload";
import { copyForm, uploadForm } from "./packages";

type Refresh = () => Promise<void>;
/** Say something in the panel's own status line (it outlives a redraw of the list). */
type Notify = (text: string) => void;

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A small form that runs `action` and reports the outcome in its own status line. */
function actionForm(id: string, cls: string, fields: Node[], submitLabel: string, action: (v: Record<string, string>) => Promise<unknown>, refresh: Refresh) {
  const note = h("span", { class: "form-note", role: "status" });
  const form = h("form", { id, class: cls }, fields, h("button", { type: "submit", class: "btn" }, submitLabel), note);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    note.textContent = "Saving…";
    note.classList.remove("error");
    try {
      await action(formValues(form));
      note.textContent = "Saved.";
      await refresh();
    } catch (e) {
      note.textContent = errText(e);
      note.classList.add("error");
    }
  });
  return form;
}

function editForm(id: string, description: string | null | undefined, tags: Record<string, string> | undefined, save: (d: string, t: Record<string, string>) => Promise<unknown>, refresh: Refresh) {
  return h(
    "details",
    { class: "edit" },
    h("summary", null, "Edit description and tags"),
    actionForm(
      id,
      "form stack",
      [
        h("label", { class: "field" }, h("span", null, "Description"), h("textarea", { name: "description", rows: 2 }, description ?? "")),
        h("label", { class: "field" }, h("span", null, "Tags to add or change (key=value, comma separated)"), h("input", { name: "tags", type: "text", value: formatTags(tags) })),
      ],
      "Save",
      (v) => save(v.description ?? "", parseTags(v.tags ?? "")),
      refresh,
    ),
  );
}

/** A version's aliases: its own list, else read off the model's alias → version map. */
function versionAliases(m: RegisteredModel, v: ModelVersion): string[] {
  if (v.aliases?.length) return v.aliases;
  return Object.entries(m.aliases ?? {})
    .filter(([, version]) => String(version) === String(v.version))
    .map(([alias]) => alias)
    .sort();
}

function versionRow(m: RegisteredModel, v: ModelVersion, refresh: Refresh, notify: Notify) {
  const primary = "accuracy" in (v.metrics ?? {}) ? "accuracy" : "r2";
  const [metricName, metricValue] = metricEntries(v.metrics, primary)[0] ?? ["", undefined];
  return h(
    "tr",
    { dataset: { version: v.version } },
    h("th", { scope: "row" }, `v${v.version}`),
    h("td", null, versionAliases(m, v).map((a) => h("span", { class: "pill" }, `@${a}`))),
    h("td", null, metricName ? `${metricName} ${formatMetric(metricValue)}` : "–"),
    h("td", null, localTime(v.created_at)),
    h(
      "td",
      null,
      v.description ? h("p", null, v.description) : null,
      formatTags(v.tags) ? h("p", { class: "muted" }, formatTags(v.tags)) : null,
      formatTags(v.tags, true)
        ? h("details", null, h("summary", null, "System tags"), h("p", { class: "muted small" }, formatTags(v.tags, true)))
        : null,
      editForm(`edit-${m.name}-v${v.version}`, v.description, v.tags, (d, t) => api.patchVersion(m.name, v.version, { description: d, tags: t }), refresh),
      copyForm({
        client: api,
        model: m.name,
        version: v,
        onCopied: async (copy) => {
          notify(`Saved ${m.name} v${v.version} as v${copy.version}.`);
          await refresh();
        },
      }),
    ),
  );
}

function modelCard(m: RegisteredModel, refresh: Refresh, notify: Notify): HTMLElement {
  const versions = [...(m.versions ?? [])].sort((a, b) => Number(b.version) - Number(a.version));
  const aliases = Object.entries(m.aliases ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const aliasNote = h("p", { class: "form-note error", role: "status" });
  const aliasInput = h("input", { name: "alias", type: "text", required: true, placeholder: "e.g. champion", list: "alias-suggestions" });
  return h(
    "article",
    { class: "model", dataset: { model: m.name } },
    h("h3", null, m.name),
    m.description ? h("p", null, m.description) : h("p", { class: "muted" }, "No description."),
    formatTags(m.tags) ? h("p", { class: "muted" }, "Tags: ", formatTags(m.tags)) : null,
    editForm(`edit-${m.name}`, m.description, m.tags, (d, t) => api.patchModel(m.name, { description: d, tags: t }), refresh),
    h(
      "div",
      { class: "aliases" },
      h("h4", null, "Aliases"),
      aliases.length
        ? h(
            "ul",
            { class: "chips" },
            aliases.map(([alias, version]) =>
              h(
                "li",
                { class: "chip" },
                `@${alias} → v${version}`,
                h(
                  "button",
                  {
                    type: "button",
                    class: "chip-x",
                    "aria-label": `Remove alias ${alias}`,
                    onclick: async (ev: Event) => {
                      const btn = ev.currentTarget as HTMLButtonElement;
                      btn.disabled = true;
                      aliasNote.textContent = "";
                      try {
                        await api.deleteAlias(m.name, alias);
                      } catch (e) {
                        // e.g. a 403: say so here (a refresh would redraw the card and lose it)
                        aliasNote.textContent = `@${alias} not removed: ${errText(e)}`;
                        btn.disabled = false;
                        return;
                      }
                      await refresh();
                    },
                  },
                  "×",
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "None."),
      aliasNote,
      actionForm(
        `alias-${m.name}`,
        "form inline-form",
        [
          h("label", { class: "field" }, h("span", null, "Alias"), aliasInput),
          h(
            "label",
            { class: "field" },
            h("span", null, "Version"),
            h("select", { name: "version" }, versions.map((v) => h("option", { value: v.version }, `v${v.version}`))),
          ),
        ],
        "Set alias",
        async (v) => {
          const alias = (v.alias ?? "").trim();
          if (!follows(MODEL_ALIAS, alias)) throw new Error(ALIAS_RULE);
          return api.setAlias(m.name, alias, v.version ?? "");
        },
        refresh,
      ),
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "table" },
        h("caption", null, `Versions of ${m.name}`),
        h("thead", null, h("tr", null, ["Version", "Aliases", "Metric", "Registered", "Notes"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, versions.map((v) => versionRow(m, v, refresh, notify))),
      ),
    ),
  );
}

async function uploadSection(onUploaded: () => Promise<void>): Promise<HTMLElement> {
  let route: ReturnType<typeof findUploadRoute> = null;
  try {
    route = findUploadRoute(await api.openapi());
  } catch {
    route = null;
  }
  if (!route) {
    return h("p", { class: "muted", id: "upload-unsupported" }, "Uploading a model package is not supported by this API version.");
  }
  if (uploadPath(route.path, "x") === null) {
    return h("p", { class: "muted" }, `This API takes model packages at ${route.path}; see the API docs (/api/docs).`);
  }
  return uploadForm({ client: api, route, onUploaded });
}

export function mountModels(): { refresh: Refresh } {
  const root = $("#models-root");
  const list = h("div", { class: "models" });
  const upload = h("div", { class: "upload" });
  const aliasHints = h("datalist", { id: "alias-suggestions" }, ["champion", "candidate", "staging", "production"].map((a) => h("option", { value: a })));
  const modelNames = h("datalist", { id: "model-names" });
  const notice = h("p", { id: "models-msg", class: "form-note ok", role: "status" });
  const notify: Notify = (text) => (notice.textContent = text);
  render(root, upload, notice, list, aliasHints, modelNames);

  const refresh: Refresh = async () => {
    try {
      const models = await api.models();
      render(modelNames, models.map((m) => h("option", { value: m.name })));
      // forms elsewhere that name a model start with the first registered one
      for (const input of document.querySelectorAll<HTMLInputElement>("input[list=model-names]:not([data-no-prefill])")) {
        if (!input.value && models[0]) input.value = models[0].name;
      }
      render(list, models.length ? models.map((m) => modelCard(m, refresh, notify)) : h("p", { class: "muted" }, "No registered models yet."));
    } catch (e) {
      render(list, h("p", { class: "error" }, loadFailure("models", e)));
    }
  };
  void uploadSection(() => refresh()).then((el) => render(upload, el));
  $("#models-refresh").addEventListener("click", () => void refresh());
  return { refresh };
}
