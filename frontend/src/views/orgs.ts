// The Organisation panel (cluster mode): the caller's organisations with their budget against usage and
// their members, and the forms: new organisation, change budget, invite, join with a code. Local mode has
// no organisations (/orgs answers 501): the panel then stays hidden. The form builders take the client, so
// tests can drive them without the page.
import { API_BASE, ApiError, type ApiClient } from "../lib/api";
import { $, h, localTime, onValidSubmit, outcome, render } from "../lib/dom";
import {
  budgetFields,
  budgetUsage,
  joinCommand,
  orgFailure,
  parseBudget,
  parseInvite,
  parseJoin,
  parseOrgCreate,
  ROLES,
  type OrgsSupport,
} from "../lib/orgs";
import type { AuthState } from "../lib/auth";
import type { OrgInvite, OrgJoined, OrgMember, OrgView } from "../lib/types";

function field(label: string, input: HTMLElement): HTMLElement {
  return h("label", { class: "field" }, h("span", null, label), input);
}

function text(name: string, attrs: Record<string, unknown> = {}): HTMLInputElement {
  return h("input", { name, type: "text", autocomplete: "off", spellcheck: "false", ...attrs });
}

/** A value shown once (an invite code, a token) with a Copy button. */
function secret(id: string, value: string, label: string): HTMLElement {
  const code = h("code", { id, class: "secret" }, value);
  const copy = h("button", { type: "button", class: "btn ghost", "aria-label": `Copy ${label}` }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value);
      copy.textContent = "Copied";
    } catch {
      // no clipboard (an insecure origin): select the text for Ctrl+C
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel?.removeAllRanges();
      sel?.addRange(range);
      copy.textContent = "Press Ctrl+C";
    }
  });
  return h("div", { class: "secret-row" }, code, copy);
}

function budgetInputs(values: { cpu: string; memory: string; gpu: string }): HTMLElement[] {
  return [
    field("CPU (cores)", text("cpu", { value: values.cpu, placeholder: "4", required: true })),
    field("Memory", text("memory", { value: values.memory, placeholder: "8Gi", required: true })),
    field("GPUs", h("input", { name: "gpu", type: "number", min: 0, max: 1024, step: 1, value: values.gpu || "0" })),
  ];
}

export interface CreateOrgFormOptions {
  client: ApiClient;
  onCreated?: (org: OrgView) => Promise<void> | void;
}

/** "New organisation" (platform admins): POST /orgs. */
export function createOrgForm({ client, onCreated }: CreateOrgFormOptions): HTMLElement {
  const submit = h("button", { type: "submit", class: "btn primary" }, "Create organisation");
  const form = h(
    "form",
    { id: "org-create-form", class: "form", novalidate: true },
    h(
      "div",
      { class: "fields" },
      field("Name", text("name", { required: true, placeholder: "acme", maxlength: 40 })),
      field("Display name (optional)", text("displayName", { placeholder: "Acme Inc." })),
      ...budgetInputs({ cpu: "4", memory: "8Gi", gpu: "0" }),
    ),
    h("div", { class: "actions" }, submit),
  );
  const { note, show } = outcome("org-create");
  onValidSubmit({
    form, submit, show, parse: parseOrgCreate, busy: "Creating…",
    run: async (value) => {
      const org = await client.createOrg(value);
      show(`Created ${org.name} (namespace ${org.namespace}).`, "ok");
      // the budget fields keep their values for the next one
      for (const n of ["name", "displayName"]) (form.elements.namedItem(n) as HTMLInputElement).value = "";
      await onCreated?.(org);
    },
    fail: (e) => show(`Not created: ${orgFailure(e)}`, "error"),
  });
  return h("div", { class: "org-create" }, form, note);
}

export interface BudgetFormOptions {
  client: ApiClient;
  org: OrgView;
  onSaved?: (org: OrgView) => Promise<void> | void;
}

/** "Change budget" (the organisation's admins): PATCH /orgs/{org}. */
export function budgetForm({ client, org, onSaved }: BudgetFormOptions): HTMLElement {
  const submit = h("button", { type: "submit", class: "btn primary" }, "Save budget");
  const form = h(
    "form",
    { id: `org-budget-${org.name}`, class: "form org-budget-form", novalidate: true },
    h("div", { class: "fields" }, ...budgetInputs(budgetFields(org.budget))),
    h("div", { class: "actions" }, submit),
  );
  const { note, show } = outcome(`org-budget-${org.name}`);
  onValidSubmit({
    form, submit, show, parse: parseBudget, busy: "Saving…",
    run: async (value) => {
      const saved = await client.setOrgBudget(org.name, value.budget);
      show("Budget saved.", "ok");
      await onSaved?.(saved);
    },
    fail: (e) => show(`Not saved: ${orgFailure(e)}`, "error"),
  });
  return h("div", { class: "org-budget" }, form, note);
}

export interface InviteFormOptions {
  client: ApiClient;
  org: string;
  /** Where the API is, for the join command (default: this page's /api). */
  apiBase?: string;
}

/** "Invite a member" (the organisation's admins): POST /orgs/{org}/invites; the code is shown once. */
export function inviteForm({ client, org, apiBase }: InviteFormOptions): HTMLElement {
  const base = apiBase ?? `${window.location.origin}${API_BASE}`;
  const submit = h("button", { type: "submit", class: "btn primary" }, "Create invite");
  const form = h(
    "form",
    { id: `org-invite-${org}`, class: "form org-invite-form", novalidate: true },
    h(
      "div",
      { class: "fields" },
      field("Role", h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r, selected: r === "viewer" }, r)))),
      field("Expires in (hours)", h("input", { name: "hours", type: "number", min: 0.02, step: "any", value: 24 })),
    ),
    h("div", { class: "actions" }, submit),
  );
  const { note, show } = outcome(`org-invite-${org}`);
  const result = h("div", { class: "invite-result", hidden: true });
  onValidSubmit({
    form, submit, show, parse: parseInvite, busy: "Creating…",
    run: async (value) => {
      render(result);
      result.hidden = true;
      const inv: OrgInvite = await client.createInvite(org, value);
      show(`Invite for a ${inv.role} in ${inv.org}, valid until ${localTime(inv.expiresAt) || inv.expiresAt}. The code is shown only now: send it to the new member.`, "ok");
      render(
        result,
        secret("invite-code", inv.code, "the invite code"),
        h("p", { class: "muted small" }, "They join with “Join with a code” on this dashboard, or:"),
        secret("invite-command", joinCommand(base, inv.code), "the join command"),
      );
      result.hidden = false;
    },
    fail: (e) => show(`No invite: ${orgFailure(e)}`, "error"),
  });
  return h("div", { class: "org-invite" }, form, note, result);
}

export interface JoinFormOptions {
  client: ApiClient;
  /** Keep the new member's token and sign in with it (Session.signIn): null, or why it did not work. */
  signIn: (token: string) => Promise<string | null>;
  onJoined?: (joined: OrgJoined) => Promise<void> | void;
}

/** "Join with a code" (no token needed): POST /orgs/join, then sign in as the new member. */
export function joinForm({ client, signIn, onJoined }: JoinFormOptions): HTMLElement {
  const submit = h("button", { type: "submit", class: "btn primary" }, "Join");
  const form = h(
    "form",
    { id: "org-join-form", class: "form", novalidate: true },
    h(
      "div",
      { class: "fields" },
      field("Invite code", text("code", { required: true, type: "password" })),
      field("Your name", text("name", { required: true, placeholder: "dana", maxlength: 63 })),
    ),
    h("div", { class: "actions" }, submit),
  );
  const { note, show } = outcome("org-join");
  const result = h("div", { class: "join-result", hidden: true });
  onValidSubmit({
    form, submit, show, parse: parseJoin, busy: "Joining…",
    run: async (value) => {
      render(result);
      result.hidden = true;
      const j = await client.joinOrg(value);
      const who = `system:serviceaccount:${j.namespace}:${j.serviceAccount}`;
      const refused = await signIn(j.token);
      show(
        refused
          ? `Joined ${j.org} as ${j.role}, but signing in with the new token failed: ${refused}`
          : `Joined ${j.org} as ${j.role}. You are now signed in as ${who}.`,
        refused ? "error" : "ok",
      );
      render(
        result,
        h("p", { class: "muted small" }, `Your token${j.expiresAt ? ` (valid until ${localTime(j.expiresAt) || j.expiresAt})` : ""}, shown only now; it also works with kubectl:`),
        secret("join-token", j.token, "your token"),
      );
      result.hidden = false;
      form.reset();
      await onJoined?.(j);
    },
    fail: (e) => show(`Not joined: ${orgFailure(e)}`, "error"),
  });
  return h("div", { class: "org-join" }, form, note, result);
}

function memberRow(org: string, m: OrgMember, remove: (m: OrgMember, btn: HTMLButtonElement) => void): HTMLTableRowElement {
  const btn =
    m.joined
      ? h("button", { type: "button", class: "btn danger", "aria-label": `Remove member ${m.name} from ${org}` }, "Remove")
      : null;
  btn?.addEventListener("click", () => remove(m, btn));
  return h(
    "tr",
    { dataset: { member: m.name, kind: m.kind } },
    h("td", null, m.kind),
    h("th", { scope: "row" }, m.kind === "ServiceAccount" && m.namespace && !m.joined ? `${m.namespace}/${m.name}` : m.name),
    h("td", null, m.role),
    h("td", null, btn),
  );
}

/** One organisation: budget bars, members, and its forms. `paint` updates it in place (forms keep their state). */
function orgCard(client: ApiClient, initial: OrgView) {
  const name = initial.name;
  const title = h("h3", null);
  const meta = h("p", { class: "muted small" });
  const usage = h("div", { class: "usage" });
  const members = h("div", { class: "table-wrap" });
  const { note: membersNote, show: showMembers } = outcome(`org-members-${name}`);
  const detailNote = h("p", { class: "muted small" });
  const budgetSlot = h("div");
  const card = h(
    "article",
    { class: "org", dataset: { org: name }, "aria-label": `Organisation ${name}` },
    title,
    meta,
    detailNote,
    h("h4", null, "Budget"),
    usage,
    h("h4", null, "Members"),
    members,
    membersNote,
    h("details", { class: "org-budget-edit" }, h("summary", null, "Change budget"), budgetSlot),
    h("details", { class: "org-invite-edit" }, h("summary", null, "Invite a member"), inviteForm({ client, org: name })),
  );
  let budgetKey = "";

  const remove = async (m: OrgMember, btn: HTMLButtonElement) => {
    if (!window.confirm(`Remove ${m.name} from ${name}? Their tokens stop working.`)) return;
    btn.disabled = true;
    showMembers(`Removing ${m.name}…`);
    try {
      await client.removeMember(name, m.name);
      showMembers(`Removed ${m.name}.`, "ok");
      paint(await client.org(name));
    } catch (e) {
      btn.disabled = false;
      showMembers(`Not removed: ${orgFailure(e)}`, "error");
    }
  };

  const paint = (org: OrgView, detailError = "") => {
    render(title, org.displayName || org.name, org.displayName ? h("span", { class: "muted" }, ` (${org.name})`) : null);
    const by = [`namespace ${org.namespace}`];
    if (org.createdBy) by.push(`created by ${org.createdBy}`);
    if (org.createdAt) by.push(localTime(org.createdAt));
    meta.textContent = by.join(" · ");
    detailNote.textContent = detailError ? `Details unavailable: ${detailError}` : "";
    render(
      usage,
      budgetUsage(org).map((r) =>
        h(
          "div",
          { class: `usage-row${r.over ? " over" : ""}`, dataset: { resource: r.id } },
          h("span", { class: "usage-label" }, r.label),
          h("meter", { min: 0, max: 1, low: 0.75, high: 0.9, optimum: 0, value: r.fraction, "aria-label": `${r.label}: ${r.text}` }),
          h("span", { class: "usage-text" }, r.text),
        ),
      ),
    );
    render(
      members,
      org.members.length
        ? h(
            "table",
            { class: "table members" },
            h("caption", { class: "sr-only" }, `Members of ${org.name}`),
            h("thead", null, h("tr", null, ["Kind", "Name", "Role", ""].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", null, org.members.map((m) => memberRow(org.name, m, (mm, b) => void remove(mm, b)))),
          )
        : h("p", { class: "muted" }, detailError ? "" : "No members listed."),
    );
    // the budget form shows the current budget (rebuilt only when it changed, so typing is not lost)
    const key = JSON.stringify(org.budget ?? {});
    if (key !== budgetKey) {
      budgetKey = key;
      render(budgetSlot, budgetForm({ client, org, onSaved: (saved) => paint(saved) }));
    }
  };
  paint(initial);
  return { el: card, paint };
}

export interface MountOrgsOptions {
  client: ApiClient;
  session: { state: AuthState; subscribe: (fn: (s: AuthState, prev: AuthState) => void) => () => void; signIn: (t: string) => Promise<string | null> };
}

/** Ask once whether this API has organisations: `off` when /orgs answers 404 (local mode; 501 from older APIs). */
export async function probeOrgs(client: ApiClient): Promise<OrgsSupport> {
  try {
    await client.orgs();
    return "on";
  } catch (e) {
    if (!(e instanceof ApiError)) return "on";
    if (e.unavailable) return "off"; // 404 in local mode (405/501: an API without organisations)
    if (!e.unauthorized) return "on";
  }
  // signed out: /orgs wants a token before it says anything; the join route needs none
  try {
    await client.joinOrg({ code: "mlstack-probe-not-a-code", name: "probe" });
  } catch (e) {
    if (e instanceof ApiError && (e.status === 501 || e.status === 404 && !/invite/i.test(e.message))) return "off";
  }
  return "on";
}

/**
 * Is asking /orgs worth it? Organisations live in cluster mode, whose API authenticates with Kubernetes
 * (authMode "kubernetes"); local mode's auth modes ("off", "tokens") would only get a 501. Ask when the
 * API said "kubernetes" or did not say (signed out before /auth/me answered, or no /auth/me).
 */
export function worthProbing(state: AuthState): boolean {
  if (state.kind === "signed-in") return state.me.authMode === "kubernetes";
  if (state.kind === "signed-out") return state.authMode == null || state.authMode === "kubernetes";
  return state.kind === "unknown";
}

export function mountOrgs({ client, session }: MountOrgsOptions): { refresh: () => Promise<void> } {
  const section = $("#orgs");
  const navItem = document.querySelector<HTMLElement>('a[href="#orgs"]')?.closest("li") ?? null;
  const setVisible = (on: boolean) => {
    section.hidden = !on;
    if (navItem) navItem.hidden = !on;
  };
  setVisible(false);

  const note = h("p", { id: "orgs-msg", class: "muted", role: "status" });
  const list = h("div", { id: "org-list", class: "org-list" });
  const cards = new Map<string, ReturnType<typeof orgCard>>();
  const join = h(
    "details",
    { id: "org-join", class: "create" },
    h("summary", null, "Join with a code"),
    joinForm({ client, signIn: (t) => session.signIn(t) }),
  );
  const create = h("details", { id: "org-create", class: "create" }, h("summary", null, "New organisation"), createOrgForm({ client, onCreated: () => refresh() }));
  render($("#orgs-root"), note, list, create, join);

  let support: OrgsSupport | "unknown" = "unknown";
  let probing: Promise<void> | null = null;
  let generation = 0;

  const clear = () => {
    cards.clear();
    render(list);
  };

  const refresh = async () => {
    if (support !== "on") return;
    const mine = ++generation;
    const state = session.state;
    if (state.kind === "signed-out" || state.kind === "checking") {
      clear();
      note.textContent = state.kind === "signed-out" ? "Sign in to see your organisations, or join one with a code." : "";
      join.open = state.kind === "signed-out";
      return;
    }
    let orgs: OrgView[];
    try {
      orgs = await client.orgs();
    } catch (e) {
      if (mine !== generation) return;
      clear();
      note.textContent =
        e instanceof ApiError && e.unauthorized
          ? "Sign in to see your organisations, or join one with a code."
          : e instanceof ApiError && e.forbidden
            ? `You belong to no organisation (${e.message}). Join one with a code.`
            : `Could not load organisations: ${orgFailure(e)}`;
      return;
    }
    const details = await Promise.allSettled(orgs.map((o) => client.org(o.name)));
    if (mine !== generation) return;
    note.textContent = orgs.length ? "" : "No organisations yet.";
    const seen = new Set<string>();
    orgs.forEach((o, i) => {
      const d = details[i];
      const org = d.status === "fulfilled" ? d.value : o;
      const why = d.status === "rejected" ? orgFailure(d.reason) : "";
      seen.add(org.name);
      let card = cards.get(org.name);
      if (card) card.paint(org, why);
      else {
        card = orgCard(client, org);
        if (why) card.paint(org, why);
        cards.set(org.name, card);
      }
    });
    for (const name of [...cards.keys()]) if (!seen.has(name)) cards.delete(name);
    render(list, [...cards.values()].map((c) => c.el));
  };

  const start = () => {
    if (!worthProbing(session.state)) {
      support = "off"; // local mode's auth (no request: a 501 would only be noise in the console)
      return;
    }
    probing ??= probeOrgs(client).then((s) => {
      support = s;
      setVisible(s === "on");
      if (s === "on") void refresh();
    });
  };
  session.subscribe((s) => {
    if (s.kind === "checking") return;
    if (support === "unknown") start();
    else void refresh();
  });
  if (session.state.kind !== "checking") start();
  $("#orgs-refresh").addEventListener("click", () => void refresh());
  return { refresh };
}
