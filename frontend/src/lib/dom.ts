// A tiny DOM builder. Text always goes in as text nodes (never innerHTML), so API data cannot inject markup.

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, unknown>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs | null = null, ...children: Child[]) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2).toLowerCase(), v as EventListener);
    } else if (k === "class") {
      el.className = String(v);
    } else if (k === "dataset") {
      for (const [dk, dv] of Object.entries(v as Record<string, unknown>)) if (dv != null) el.dataset[dk] = String(dv);
    } else if (k === "value" && "value" in el) {
      (el as HTMLInputElement).value = String(v);
    } else if (k === "checked" || k === "selected" || k === "disabled") {
      (el as unknown as Record<string, boolean>)[k] = Boolean(v);
      if (v) el.setAttribute(k, "");
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (Array.isArray(c)) append(el, c);
    else if (c === null || c === undefined || c === false) continue;
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function $(sel: string, root: ParentNode = document): HTMLElement {
  const el = root.querySelector<HTMLElement>(sel);
  if (!el) throw new Error(`missing element ${sel}`);
  return el;
}

/** Replace an element's children. */
export function render(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A form's named fields as strings. */
export function formValues(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new FormData(form).entries()) if (typeof v === "string") out[k] = v;
  return out;
}

/** Show per-field errors next to their inputs (aria-invalid + aria-describedby) and focus the first. */
export function showFieldErrors(form: HTMLFormElement, errors: Record<string, string>): void {
  for (const el of form.querySelectorAll<HTMLElement>(".field-error")) el.remove();
  for (const el of form.querySelectorAll<HTMLElement>("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    el.removeAttribute("aria-describedby");
  }
  let first: HTMLElement | null = null;
  for (const [name, msg] of Object.entries(errors)) {
    const input = form.querySelector<HTMLElement>(`[name="${name}"]`);
    if (!input) continue;
    const id = `${form.id || "form"}-${name}-error`;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", id);
    input.closest("label, .field")?.append(h("span", { class: "field-error", id }, msg));
    first ??= input;
  }
  first?.focus();
}

export function timeAgo(iso: string | null | undefined, now = Date.now()): string {
  const t = iso ? Date.parse(iso) : NaN;
  if (Number.isNaN(t)) return "";
  const s = Math.round((now - t) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function localTime(iso: string | null | undefined): string {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? "" : new Date(t).toLocaleString();
}

export type OutcomeKind = "ok" | "error" | "busy";

/** The status line under a form, and a list for every problem of a refusal (shown only when there are some). */
export function outcome(id: string) {
  const note = h("p", { id: `${id}-msg`, class: "form-note", role: "status" });
  const list = h("ul", { id: `${id}-problems`, class: "problems error", hidden: true });
  const show = (text: string, kind: OutcomeKind = "busy", problems: string[] = []) => {
    note.textContent = text;
    note.classList.toggle("error", kind === "error");
    note.classList.toggle("ok", kind === "ok");
    render(list, problems.map((p) => h("li", null, p)));
    list.hidden = problems.length === 0;
  };
  return { note, list, show };
}

export interface SubmitFlow<T> {
  form: HTMLFormElement;
  submit: HTMLButtonElement;
  /** The form's values -> the request, or the per-field errors to show. */
  parse: (values: Record<string, string>) => { ok: true; value: T } | { ok: false; errors: Record<string, string> };
  show: (text: string, kind?: OutcomeKind) => void;
  /** The status line while ``run`` is under way. */
  busy: string;
  run: (value: T) => Promise<void>;
  /** Say why ``run`` failed. */
  fail: (e: unknown) => void;
}

/** A form's submit: validate (field errors, nothing sent), then run once at a time (the button is disabled). */
export function onValidSubmit<T>({ form, submit, parse, show, busy, run, fail }: SubmitFlow<T>): void {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    const parsed = parse(formValues(form));
    if (!parsed.ok) {
      showFieldErrors(form, parsed.errors);
      show("");
      return;
    }
    showFieldErrors(form, {});
    submit.disabled = true;
    show(busy);
    try {
      await run(parsed.value);
    } catch (e) {
      fail(e);
    } finally {
      submit.disabled = false;
    }
  });
}
