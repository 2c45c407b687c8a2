import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiClient, ApiError } from "../src/lib/api";
import {
  budgetFields,
  budgetUsage,
  formatCpu,
  formatMemory,
  joinCommand,
  orgFailure,
  parseBudget,
  parseInvite,
  parseJoin,
  parseOrgCreate,
  parseQuantity,
} from "../src/lib/orgs";
import type { OrgView } from "../src/lib/types";
import { budgetForm, createOrgForm, inviteForm, joinForm, probeOrgs, worthProbing } from "../src/views/orgs";
import type { WhoAmI } from "../src/lib/types";

type Call = { url: string; init?: RequestInit };

function json(status: number, body?: unknown): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

/** A client whose answers come from `answer` and whose calls land in `calls`. */
function client(answer: (call: Call) => Response, calls: Call[] = [], token: string | null = "pat-token") {
  return new ApiClient(async (url, init) => {
    const call = { url, init };
    calls.push(call);
    return answer(call);
  }, { token: () => token });
}

function sent(call: Call): unknown {
  return JSON.parse(String(call.init?.body));
}

function auth(call: Call): string | undefined {
  return (call.init?.headers as Record<string, string>).Authorization;
}

const ACME: OrgView = {
  name: "acme",
  namespace: "org-acme",
  displayName: "Acme",
  createdBy: "pat",
  createdAt: "2026-01-01T00:00:00Z",
  budget: { "requests.cpu": "2", "requests.memory": "4Gi", "requests.nvidia.com/gpu": "0" },
  used: { "requests.cpu": "500m", "requests.memory": "512Mi", "requests.nvidia.com/gpu": "0" },
  members: [
    { kind: "User", name: "pat", role: "admin" },
    { kind: "ServiceAccount", name: "dana", role: "deployer", namespace: "org-acme", joined: true },
    // the creator of another organisation may be a ServiceAccount elsewhere: listed, not removable here
    { kind: "ServiceAccount", name: "ci", role: "admin", namespace: "ci", joined: false },
  ],
};

async function submit(el: HTMLElement, values: Record<string, string>): Promise<void> {
  const form = el.querySelector("form")!;
  for (const [name, v] of Object.entries(values)) {
    (form.querySelector(`[name="${name}"]`) as HTMLInputElement | HTMLSelectElement).value = v;
  }
  form.dispatchEvent(new Event("submit", { cancelable: true }));
  await vi.waitFor(() => expect((form.querySelector("button[type=submit]") as HTMLButtonElement).disabled).toBe(false));
  await new Promise((r) => setTimeout(r, 0));
}

function note(el: HTMLElement): HTMLElement {
  return el.querySelector(".form-note")!;
}

afterEach(() => {
  document.body.replaceChildren();
});

describe("Kubernetes quantities", () => {
  it("reads CPU", () => {
    expect(parseQuantity("500m")).toBe(0.5);
    expect(parseQuantity("1.5")).toBe(1.5);
    expect(parseQuantity("2")).toBe(2);
    expect(parseQuantity("0")).toBe(0);
    expect(parseQuantity("250m")).toBe(0.25);
    expect(parseQuantity(".5")).toBe(0.5);
  });

  it("reads memory, binary and decimal", () => {
    expect(parseQuantity("2Gi")).toBe(2 * 1024 ** 3);
    expect(parseQuantity("512Mi")).toBe(512 * 1024 ** 2);
    expect(parseQuantity("1.5Gi")).toBe(1.5 * 1024 ** 3);
    expect(parseQuantity("64Ki")).toBe(65536);
    expect(parseQuantity("1G")).toBe(1e9);
    expect(parseQuantity("128M")).toBe(128e6);
    expect(parseQuantity("1k")).toBe(1000);
    expect(parseQuantity("1e3")).toBe(1000);
    expect(parseQuantity("1Ti")).toBe(1024 ** 4);
  });

  it("refuses what is not a quantity", () => {
    for (const bad of ["", "lots", "2 Gi", "Gi", "1.5.2", "2gi", "1iB", "m", null, undefined]) expect(parseQuantity(bad)).toBeNull();
    expect(parseQuantity(3)).toBe(3);
  });

  it("prints them back for people", () => {
    expect(formatCpu(0.5)).toBe("500m");
    expect(formatCpu(1.5)).toBe("1.5");
    expect(formatCpu(0)).toBe("0");
    expect(formatCpu(4)).toBe("4");
    expect(formatMemory(512 * 1024 ** 2)).toBe("512Mi");
    expect(formatMemory(1.5 * 1024 ** 3)).toBe("1.5Gi");
    expect(formatMemory(3 * 1024 ** 3)).toBe("3Gi");
    expect(formatMemory(0)).toBe("0");
    expect(formatMemory(1e9)).toBe("953.7Mi");
  });
});

describe("budget against usage", () => {
  it("gives a row per resource with its fraction", () => {
    const rows = budgetUsage(ACME);
    expect(rows.map((r) => r.id)).toEqual(["cpu", "memory", "gpu"]);
    expect(rows[0]).toMatchObject({ label: "CPU", hard: 2, used: 0.5, fraction: 0.25, over: false, text: "500m of 2 cores" });
    expect(rows[1]).toMatchObject({ label: "Memory", hard: 4 * 1024 ** 3, used: 512 * 1024 ** 2, fraction: 0.125, text: "512Mi of 4Gi" });
    expect(rows[2]).toMatchObject({ label: "GPU", hard: 0, used: 0, fraction: 0, over: false, text: "0 of 0" });
  });

  it("caps the bar at full and flags what is over", () => {
    const [cpu, mem, gpu] = budgetUsage({
      budget: { "requests.cpu": "1", "requests.memory": "1Gi", "requests.nvidia.com/gpu": "0" },
      used: { "requests.cpu": "1500m", "requests.memory": "1Gi", "requests.nvidia.com/gpu": "1" },
    });
    expect(cpu).toMatchObject({ fraction: 1, over: true });
    expect(mem).toMatchObject({ fraction: 1, over: false });
    expect(gpu).toMatchObject({ fraction: 1, over: true });
  });

  it("reads nothing used as zero and a missing budget as no limit", () => {
    const [cpu, mem] = budgetUsage({ budget: { "requests.memory": "8Gi" }, used: {} });
    expect(cpu).toMatchObject({ hard: null, used: 0, fraction: 0, over: false, text: "0 cores (no limit)" });
    expect(mem).toMatchObject({ hard: 8 * 1024 ** 3, used: 0, text: "0 of 8Gi" });
    expect(budgetFields(ACME.budget)).toEqual({ cpu: "2", memory: "4Gi", gpu: "0" });
    expect(budgetFields(undefined)).toEqual({ cpu: "", memory: "", gpu: "" });
  });
});

describe("form bodies", () => {
  it("new organisation", () => {
    expect(parseOrgCreate({ name: " acme ", displayName: "Acme Inc.", cpu: "1500m", memory: "3Gi", gpu: "1" })).toEqual({
      ok: true,
      value: { name: "acme", displayName: "Acme Inc.", budget: { cpu: "1500m", memory: "3Gi", gpu: 1 } },
    });
    expect(parseOrgCreate({ name: "acme", displayName: " ", cpu: "4", memory: "8Gi", gpu: "" })).toEqual({
      ok: true,
      value: { name: "acme", budget: { cpu: "4", memory: "8Gi", gpu: 0 } },
    });
    const bad = parseOrgCreate({ name: "Acme!", cpu: "lots", memory: "8GB", gpu: "1.5" });
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(Object.keys(bad.errors).sort()).toEqual(["cpu", "gpu", "memory", "name"]);
    const missing = parseOrgCreate({ name: "", cpu: "", memory: "" });
    if (!missing.ok) expect(missing.errors).toMatchObject({ name: "Required.", cpu: "Required.", memory: "Required." });
    expect(parseOrgCreate({ name: "a".repeat(41), cpu: "1", memory: "1Gi" }).ok).toBe(false);
    expect(parseOrgCreate({ name: "-acme", cpu: "1", memory: "1Gi" }).ok).toBe(false);
  });

  it("change budget", () => {
    expect(parseBudget({ cpu: "8", memory: "16Gi", gpu: "2" })).toEqual({ ok: true, value: { budget: { cpu: "8", memory: "16Gi", gpu: 2 } } });
    expect(parseBudget({ cpu: "0.1234", memory: "16Gi", gpu: "2000" })).toMatchObject({ ok: false, errors: { cpu: expect.any(String), gpu: "At most 1024." } });
  });

  it("invite: role and hours → seconds", () => {
    expect(parseInvite({ role: "deployer", hours: "2" })).toEqual({ ok: true, value: { role: "deployer", expiresInSeconds: 7200 } });
    expect(parseInvite({ role: "viewer", hours: "" })).toEqual({ ok: true, value: { role: "viewer", expiresInSeconds: 86400 } });
    expect(parseInvite({ role: "admin", hours: "0.5" })).toEqual({ ok: true, value: { role: "admin", expiresInSeconds: 1800 } });
    expect(parseInvite({ role: "root", hours: "1" })).toMatchObject({ ok: false, errors: { role: expect.any(String) } });
    expect(parseInvite({ role: "viewer", hours: "0" })).toMatchObject({ ok: false, errors: { hours: expect.any(String) } });
    expect(parseInvite({ role: "viewer", hours: "0.01" })).toMatchObject({ ok: false, errors: { hours: expect.stringContaining("minute") } });
  });

  it("join", () => {
    expect(parseJoin({ code: "  abcdefgh12345  ", name: "dana" })).toEqual({ ok: true, value: { code: "abcdefgh12345", name: "dana" } });
    expect(parseJoin({ code: "short", name: "Dana" })).toMatchObject({ ok: false, errors: { code: expect.any(String), name: expect.any(String) } });
    expect(parseJoin({ code: "", name: "" })).toMatchObject({ ok: false, errors: { code: "Paste the invite code.", name: "Required." } });
  });

  it("the join command", () => {
    expect(joinCommand("https://ml.example/api", "C0DE")).toBe(
      `curl -X POST https://ml.example/api/orgs/join -H 'content-type: application/json' -d '{"code":"C0DE","name":"<your-name>"}'`,
    );
  });

  it("says why a call failed in the API's words", () => {
    expect(orgFailure(new ApiError(403, "vic may not create organizations"))).toBe("vic may not create organizations");
    expect(orgFailure(new ApiError(410, "invite code already used"))).toBe("invite code already used");
    expect(orgFailure(new ApiError(401, "missing bearer token"))).toMatch(/^Sign in/);
    expect(orgFailure(new Error("boom"))).toBe("boom");
  });
});

describe("the client's /orgs calls", () => {
  it("sends the documented requests", async () => {
    const calls: Call[] = [];
    const c = client(() => json(200, {}), calls);
    await c.orgs();
    await c.org("acme");
    await c.createOrg({ name: "acme", budget: { cpu: "4", memory: "8Gi", gpu: 0 } });
    await c.setOrgBudget("acme", { cpu: "8", memory: "16Gi", gpu: 1 });
    await c.createInvite("acme", { role: "deployer", expiresInSeconds: 600 });
    await c.removeMember("acme", "dana");
    await c.joinOrg({ code: "abcdefgh", name: "dana" });
    expect(calls.map((x) => `${x.init?.method} ${x.url}`)).toEqual([
      "GET /api/orgs",
      "GET /api/orgs/acme",
      "POST /api/orgs",
      "PATCH /api/orgs/acme",
      "POST /api/orgs/acme/invites",
      "DELETE /api/orgs/acme/members/dana",
      "POST /api/orgs/join",
    ]);
    expect(sent(calls[2])).toEqual({ name: "acme", budget: { cpu: "4", memory: "8Gi", gpu: 0 } });
    expect(sent(calls[3])).toEqual({ budget: { cpu: "8", memory: "16Gi", gpu: 1 } });
    expect(sent(calls[4])).toEqual({ role: "deployer", expiresInSeconds: 600 });
    expect(sent(calls[6])).toEqual({ code: "abcdefgh", name: "dana" });
    expect(auth(calls[0])).toBe("Bearer pat-token");
    expect(auth(calls[6])).toBeUndefined(); // the code is the credential
  });

  it("probes once: 501 hides the panel, a list or a refusal shows it", async () => {
    expect(await probeOrgs(client(() => json(501, { detail: "organisations ... need cluster mode" })))).toBe("off");
    // what local mode answers now: a 404 that says why (never a 5xx)
    expect(await probeOrgs(client(() => json(404, { detail: "no organisations in local mode: ... need cluster mode" })))).toBe("off");
    expect(await probeOrgs(client(() => json(200, [ACME])))).toBe("on");
    expect(await probeOrgs(client(() => json(403, { detail: "olga may not list organizations" })))).toBe("on");
  });

  it("asks only an API that may have organisations (cluster mode authenticates with Kubernetes)", () => {
    const me = (authMode: WhoAmI["authMode"]): WhoAmI => ({ name: "x", kind: "token", role: null, groups: [], namespace: "default", org: null, authMode });
    expect(worthProbing({ kind: "signed-in", me: me("kubernetes"), token: "t" })).toBe(true);
    expect(worthProbing({ kind: "signed-in", me: me("off"), token: null })).toBe(false);
    expect(worthProbing({ kind: "signed-in", me: me("tokens"), token: "t" })).toBe(false);
    expect(worthProbing({ kind: "signed-out", authMode: "kubernetes", message: "" })).toBe(true);
    expect(worthProbing({ kind: "signed-out", authMode: null, message: "" })).toBe(true);
    expect(worthProbing({ kind: "signed-out", authMode: "tokens", message: "" })).toBe(false);
    expect(worthProbing({ kind: "unknown", message: "no /auth/me" })).toBe(true);
    expect(worthProbing({ kind: "checking" })).toBe(false);
  });

  it("signed out, the probe asks the join route (no token needed)", async () => {
    const local: Call[] = [];
    const answerLocal = (c: Call) => (c.url === "/api/orgs" ? json(401, { detail: "missing bearer token" }) : json(501, { detail: "need cluster mode" }));
    expect(await probeOrgs(client(answerLocal, local, null))).toBe("off");
    expect(local.map((x) => `${x.init?.method} ${x.url}`)).toEqual(["GET /api/orgs", "POST /api/orgs/join"]);
    const answerLocal404 = (c: Call) => (c.url === "/api/orgs" ? json(401, { detail: "missing bearer token" }) : json(404, { detail: "no organisations in local mode" }));
    expect(await probeOrgs(client(answerLocal404, [], null))).toBe("off");
    const answerCluster = (c: Call) => (c.url === "/api/orgs" ? json(401, { detail: "missing bearer token" }) : json(404, { detail: "unknown invite code" }));
    expect(await probeOrgs(client(answerCluster, [], null))).toBe("on");
  });
});

describe("the forms", () => {
  it("creates an organisation and reports it", async () => {
    const calls: Call[] = [];
    const created = vi.fn();
    const el = createOrgForm({ client: client(() => json(201, { ...ACME, name: "beta", namespace: "org-beta" }), calls), onCreated: created });
    document.body.append(el);
    await submit(el, { name: "beta", displayName: "Beta", cpu: "1500m", memory: "3Gi", gpu: "1" });
    expect(sent(calls[0])).toEqual({ name: "beta", displayName: "Beta", budget: { cpu: "1500m", memory: "3Gi", gpu: 1 } });
    expect(note(el).textContent).toBe("Created beta (namespace org-beta).");
    expect(note(el).classList.contains("ok")).toBe(true);
    expect(created).toHaveBeenCalledOnce();
    // ready for the next one: name cleared, the budget kept
    expect((el.querySelector('[name="name"]') as HTMLInputElement).value).toBe("");
    expect((el.querySelector('[name="cpu"]') as HTMLInputElement).value).toBe("1500m");
  });

  it("shows a 409 or a 403 in the create form, and sends nothing for a bad name", async () => {
    const calls: Call[] = [];
    let answer = json(409, { detail: "organisation acme already exists" });
    const el = createOrgForm({ client: client(() => answer, calls) });
    document.body.append(el);
    await submit(el, { name: "acme", cpu: "4", memory: "8Gi" });
    expect(note(el).textContent).toBe("Not created: organisation acme already exists");
    expect(note(el).classList.contains("error")).toBe(true);
    answer = json(403, { detail: "vic may not create organizations" });
    await submit(el, { name: "other" });
    expect(note(el).textContent).toBe("Not created: vic may not create organizations");
    await submit(el, { name: "Not A Name" });
    expect(calls).toHaveLength(2);
    expect(el.querySelector(".field-error")?.textContent).toMatch(/Lowercase/);
  });

  it("changes the budget (prefilled with the current one) and shows a 422", async () => {
    const calls: Call[] = [];
    const saved = vi.fn();
    let answer = json(200, { ...ACME, budget: { ...ACME.budget, "requests.cpu": "8" } });
    const el = budgetForm({ client: client(() => answer, calls), org: ACME, onSaved: saved });
    document.body.append(el);
    expect((el.querySelector('[name="cpu"]') as HTMLInputElement).value).toBe("2");
    expect((el.querySelector('[name="memory"]') as HTMLInputElement).value).toBe("4Gi");
    await submit(el, { cpu: "8" });
    expect(calls[0].url).toBe("/api/orgs/acme");
    expect(sent(calls[0])).toEqual({ budget: { cpu: "8", memory: "4Gi", gpu: 0 } });
    expect(note(el).textContent).toBe("Budget saved.");
    expect(saved.mock.calls[0][0].budget["requests.cpu"]).toBe("8");
    answer = json(422, { detail: [{ loc: ["body", "budget", "cpu"], msg: "String should match pattern" }] });
    await submit(el, { cpu: "9" });
    expect(note(el).textContent).toBe("Not saved: budget.cpu: String should match pattern");
  });

  it("creates an invite and shows the code once, with the join command", async () => {
    const calls: Call[] = [];
    const el = inviteForm({
      client: client(() => json(201, { code: "INVITE-CODE-123", org: "acme", role: "deployer", expiresAt: "2026-01-02T00:00:00Z" }), calls),
      org: "acme",
      apiBase: "http://dash/api",
    });
    document.body.append(el);
    await submit(el, { role: "deployer", hours: "2" });
    expect(sent(calls[0])).toEqual({ role: "deployer", expiresInSeconds: 7200 });
    expect(calls[0].url).toBe("/api/orgs/acme/invites");
    expect(el.querySelector("#invite-code")?.textContent).toBe("INVITE-CODE-123");
    expect(el.querySelector("#invite-command")?.textContent).toBe(joinCommand("http://dash/api", "INVITE-CODE-123"));
    expect(note(el).textContent).toMatch(/^Invite for a deployer in acme/);
    expect(el.querySelector<HTMLElement>(".invite-result")!.hidden).toBe(false);
    expect(el.querySelector('button[aria-label="Copy the invite code"]')).not.toBeNull();
  });

  it("shows a 403 in the invite form and no code", async () => {
    const el = inviteForm({ client: client(() => json(403, { detail: "dana may not create invites in namespace org-acme" })), org: "acme" });
    document.body.append(el);
    await submit(el, { role: "admin", hours: "1" });
    expect(note(el).textContent).toBe("No invite: dana may not create invites in namespace org-acme");
    expect(el.querySelector("#invite-code")).toBeNull();
    expect(el.querySelector<HTMLElement>(".invite-result")!.hidden).toBe(true);
  });

  it("joins, signs in with the new token and shows it once", async () => {
    const calls: Call[] = [];
    const joined = { org: "acme", namespace: "org-acme", serviceAccount: "dana", role: "deployer", token: "NEW-TOKEN", expiresAt: null };
    const signIn = vi.fn(async () => null);
    const el = joinForm({ client: client(() => json(201, joined), calls, "stale-token"), signIn });
    document.body.append(el);
    await submit(el, { code: "abcdefgh1234", name: "dana" });
    expect(sent(calls[0])).toEqual({ code: "abcdefgh1234", name: "dana" });
    expect(auth(calls[0])).toBeUndefined();
    expect(signIn).toHaveBeenCalledWith("NEW-TOKEN");
    expect(note(el).textContent).toBe("Joined acme as deployer. You are now signed in as system:serviceaccount:org-acme:dana.");
    expect(el.querySelector("#join-token")?.textContent).toBe("NEW-TOKEN");
    expect((el.querySelector('[name="code"]') as HTMLInputElement).value).toBe("");
  });

  it("says when signing in with the new token failed", async () => {
    const joined = { org: "acme", namespace: "org-acme", serviceAccount: "dana", role: "viewer", token: "T", expiresAt: null };
    const el = joinForm({ client: client(() => json(201, joined)), signIn: async () => "That token was refused: no" });
    document.body.append(el);
    await submit(el, { code: "abcdefgh1234", name: "dana" });
    expect(note(el).textContent).toBe("Joined acme as viewer, but signing in with the new token failed: That token was refused: no");
    expect(note(el).classList.contains("error")).toBe(true);
    expect(el.querySelector("#join-token")?.textContent).toBe("T");
  });

  it.each([
    [404, "unknown invite code"],
    [409, "the name dana is taken in organisation acme: choose another"],
    [410, "invite code already used"],
    [422, "code: String should have at least 8 characters"],
  ])("shows a %i from the join in the join form", async (status, detail) => {
    const signIn = vi.fn(async () => null);
    const el = joinForm({ client: client(() => json(status, { detail })), signIn });
    document.body.append(el);
    await submit(el, { code: "abcdefgh1234", name: "dana" });
    expect(note(el).textContent).toBe(`Not joined: ${detail}`);
    expect(note(el).classList.contains("error")).toBe(true);
    expect(signIn).not.toHaveBeenCalled();
    expect(el.querySelector("#join-token")).toBeNull();
  });
});
