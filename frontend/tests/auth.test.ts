import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AlertStore, AlertStream, type EventSourceLike } from "../src/lib/alerts";
import { ApiClient, ApiError, loadFailure } from "../src/lib/api";
import { identityLabel, Session, type AuthState } from "../src/lib/auth";
import { TOKEN_KEY, TokenStore, type StorageLike } from "../src/lib/token";
import type { WhoAmI } from "../src/lib/types";

type Call = { url: string; init?: RequestInit };

function header(call: Call, name: string): string | undefined {
  return (call.init?.headers as Record<string, string> | undefined)?.[name];
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

async function caught(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    return e as ApiError;
  }
  throw new Error("expected a rejection");
}

function memoryStorage(): StorageLike & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => void data.set(k, v),
    removeItem: (k) => void data.delete(k),
  };
}

const VIC: WhoAmI = { name: "vic", kind: "token", role: "viewer", groups: [], namespace: "default", org: null, authMode: "tokens" };
const ADA: WhoAmI = { ...VIC, name: "ada", role: "admin" };
const ANON: WhoAmI = { name: "anonymous", kind: "anonymous", role: "admin", groups: [], namespace: "default", org: null, authMode: "off" };

/** A fake API with auth on: tokens "vic-token" and "ada-token"; viewers may not POST /deployments. */
function fakeApi(calls: Call[] = [], users: Record<string, WhoAmI> = { "vic-token": VIC, "ada-token": ADA }) {
  return async (url: string, init?: RequestInit) => {
    calls.push({ url, init });
    const auth = header({ url, init }, "Authorization");
    const who = auth?.startsWith("Bearer ") ? users[auth.slice(7)] : undefined;
    if (!who) return json(401, { detail: auth ? "invalid or expired token" : "missing bearer token" });
    if (url === "/api/auth/me") return json(200, who);
    if (init?.method === "POST" && who.role === "viewer") {
      return json(403, { detail: `${who.name} may not create modeldeployments in namespace default` });
    }
    return json(200, []);
  };
}

describe("ApiClient and the token", () => {
  it("sends Authorization: Bearer when a token is stored", async () => {
    const calls: Call[] = [];
    const c = new ApiClient(fakeApi(calls), { token: () => "vic-token" });
    await c.models();
    expect(header(calls[0], "Authorization")).toBe("Bearer vic-token");
    expect(header(calls[0], "Accept")).toBe("application/json");
  });

  it("sends no Authorization header without a token", async () => {
    const calls: Call[] = [];
    const c = new ApiClient(async (url, init) => (calls.push({ url, init }), json(200, [])), { token: () => null });
    await c.models();
    await new ApiClient(async (url, init) => (calls.push({ url, init }), json(200, []))).models();
    expect(calls.map((call) => header(call, "Authorization"))).toEqual([undefined, undefined]);
  });

  it("keeps JSON headers next to the token", async () => {
    const calls: Call[] = [];
    const c = new ApiClient(fakeApi(calls), { token: () => "ada-token" });
    await c.createDeployment({ name: "d", model: { name: "m", alias: "champion" } } as never);
    expect(header(calls[0], "Authorization")).toBe("Bearer ada-token");
    expect(header(calls[0], "Content-Type")).toBe("application/json");
  });

  it("tries a given token (or none) instead of the stored one", async () => {
    const calls: Call[] = [];
    const c = new ApiClient(fakeApi(calls), { token: () => "vic-token" });
    expect((await c.me("ada-token")).name).toBe("ada");
    await expect(c.me(null)).rejects.toMatchObject({ status: 401 });
    expect(calls.map((call) => header(call, "Authorization"))).toEqual(["Bearer ada-token", undefined]);
  });

  it("tells its listeners of a 401, with the token that call carried", async () => {
    const c = new ApiClient(fakeApi(), { token: () => "stale" });
    const seen: [number, string | null][] = [];
    const off = c.onUnauthorized((e, used) => seen.push([e.status, used]));
    const e = await caught(c.models());
    expect(e).toBeInstanceOf(ApiError);
    expect(e.unauthorized).toBe(true);
    expect(e.message).toBe("invalid or expired token");
    expect(seen).toEqual([[401, "stale"]]);
    off();
    await c.models().catch(() => undefined);
    expect(seen).toHaveLength(1);
  });

  it("surfaces a 403's detail as the message and does not ask for a sign-in", async () => {
    const c = new ApiClient(fakeApi(), { token: () => "vic-token" });
    const seen: unknown[] = [];
    c.onUnauthorized((e) => seen.push(e));
    const e = await caught(c.createDeployment({ name: "d", model: { name: "m", alias: "champion" } } as never));
    expect(e.status).toBe(403);
    expect(e.forbidden).toBe(true);
    expect(e.message).toBe("vic may not create modeldeployments in namespace default");
    expect(seen).toEqual([]);
  });
});

describe("loadFailure", () => {
  it("asks to sign in after a 401 and says why otherwise", () => {
    expect(loadFailure("models", new ApiError(401, "missing bearer token"))).toBe("Sign in to see models.");
    expect(loadFailure("models", new ApiError(403, "vic may not list models"))).toBe("Could not load models: vic may not list models");
  });
});

describe("TokenStore", () => {
  it("saves, trims and clears the token under its key", () => {
    const storage = memoryStorage();
    const t = new TokenStore(storage);
    expect(t.get()).toBeNull();
    t.set("  abc  ");
    expect(storage.data.get(TOKEN_KEY)).toBe("abc");
    expect(new TokenStore(storage).get()).toBe("abc"); // survives a reload
    t.set("");
    expect(t.get()).toBeNull();
    t.set("def");
    t.clear();
    expect(storage.data.has(TOKEN_KEY)).toBe(false);
    expect(t.get()).toBeNull();
  });

  it("uses localStorage by default (key mlstack.token)", () => {
    localStorage.clear();
    const t = new TokenStore();
    t.set("xyz");
    expect(localStorage.getItem("mlstack.token")).toBe("xyz");
    t.clear();
    expect(localStorage.getItem("mlstack.token")).toBeNull();
  });

  it("falls back to memory when storage throws", () => {
    const broken: StorageLike = {
      getItem: () => {
        throw new Error("denied");
      },
      setItem: () => {
        throw new Error("denied");
      },
      removeItem: () => {
        throw new Error("denied");
      },
    };
    const t = new TokenStore(broken);
    t.set("abc");
    expect(t.get()).toBe("abc");
    t.clear();
    expect(t.get()).toBeNull();
  });
});

function session(users?: Record<string, WhoAmI>, stored: string | null = null, fetchImpl?: (url: string, init?: RequestInit) => Promise<Response>) {
  const storage = memoryStorage();
  const tokens = new TokenStore(storage);
  if (stored) tokens.set(stored);
  const calls: Call[] = [];
  const client = new ApiClient(fetchImpl ?? fakeApi(calls, users), { token: () => tokens.get() });
  const s = new Session(client, tokens);
  const states: AuthState[] = [];
  s.subscribe((st) => states.push(st));
  return { s, tokens, storage, client, calls, states };
}

describe("Session", () => {
  it("asks for a token when the API answers 401 without one", async () => {
    const { s, states } = session();
    await s.check();
    expect(s.state).toEqual({ kind: "signed-out", authMode: null, message: "" });
    expect(s.open).toBe(false);
    expect(states.map((st) => st.kind)).toEqual(["signed-out"]);
  });

  it("asks for a token when /auth/me says auth is on and none is stored", async () => {
    const f = async () => json(200, { ...ANON, role: null, authMode: "tokens" });
    const { s } = session(undefined, null, f);
    await s.check();
    expect(s.state).toMatchObject({ kind: "signed-out", authMode: "tokens" });
  });

  it("with auth off is anonymous (admin) and asks nothing", async () => {
    const { s } = session(undefined, null, async () => json(200, ANON));
    await s.check();
    expect(s.state).toMatchObject({ kind: "signed-in", token: null });
    expect(s.open).toBe(true);
    expect(identityLabel(ANON)).toBe("anonymous (admin)");
  });

  it("carries on without identity when the API has no /auth/me", async () => {
    const { s } = session(undefined, null, async () => json(404, { detail: "Not Found" }));
    await s.check();
    expect(s.state.kind).toBe("unknown");
    expect(s.open).toBe(true);
  });

  it("refuses a wrong token without storing it, then stores a good one", async () => {
    const { s, tokens, storage, states } = session();
    await s.check();
    expect(await s.signIn("wrong")).toBe("That token was refused: invalid or expired token");
    expect(tokens.get()).toBeNull();
    expect(s.state.kind).toBe("signed-out");
    expect(await s.signIn("   ")).toMatch(/Paste a token/);
    expect(await s.signIn(" vic-token ")).toBeNull();
    expect(storage.data.get(TOKEN_KEY)).toBe("vic-token");
    expect(s.state).toMatchObject({ kind: "signed-in", token: "vic-token", me: { name: "vic" } });
    expect(identityLabel(VIC)).toBe("vic (viewer)");
    expect(states.map((st) => st.kind)).toEqual(["signed-out", "signed-in"]);
  });

  it("signs out: clears the token and asks again", async () => {
    const { s, tokens, states } = session(undefined, "ada-token");
    await s.check();
    expect(s.state).toMatchObject({ kind: "signed-in", me: { name: "ada" } });
    await s.signOut();
    expect(tokens.get()).toBeNull();
    expect(s.state.kind).toBe("signed-out");
    expect(states.map((st) => st.kind)).toEqual(["signed-in", "checking", "signed-out"]);
  });

  it("a 401 on any call with the stored token forgets it and asks to sign in again", async () => {
    const users: Record<string, WhoAmI> = { "vic-token": VIC };
    const { s, client, tokens } = session(users, "vic-token");
    await s.check();
    delete users["vic-token"]; // revoked
    await client.deployments().catch(() => undefined);
    expect(tokens.get()).toBeNull();
    expect(s.state).toMatchObject({ kind: "signed-out", authMode: "tokens" });
    expect((s.state as { message: string }).message).toMatch(/refused the stored token/);
    // later 401s without a token keep that message
    await client.models().catch(() => undefined);
    expect((s.state as { message: string }).message).toMatch(/refused the stored token/);
  });

  it("ignores a 401 for a token no longer in use", async () => {
    const { s, client, tokens } = session(undefined, "ada-token");
    await s.check();
    await client.request("/models", { token: "old" }).catch(() => undefined);
    expect(tokens.get()).toBe("ada-token");
    expect(s.state.kind).toBe("signed-in");
  });

  it("does not sign out on a 403", async () => {
    const { s, client } = session(undefined, "vic-token");
    await s.check();
    await expect(client.createDeployment({ name: "d", model: { name: "m", alias: "champion" } } as never)).rejects.toMatchObject({ status: 403 });
    expect(s.state.kind).toBe("signed-in");
  });
});

class FakeEventSource implements EventSourceLike {
  readyState = 0;
  onopen: ((ev: Event) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  closed = false;
  constructor(readonly url: string) {}
  addEventListener() {}
  close() {
    this.closed = true;
  }
}

describe("AlertStream and the stream ticket", () => {
  function stream(ticket: (() => Promise<string | null>) | undefined, store = new AlertStore()) {
    const sources: FakeEventSource[] = [];
    const timers: (() => void)[] = [];
    const s = new AlertStream({
      url: "/api/webhook",
      store,
      ticket,
      createEventSource: (url) => {
        const es = new FakeEventSource(url);
        sources.push(es);
        return es;
      },
      setTimer: (fn) => timers.push(fn),
      clearTimer: () => timers.splice(0),
    });
    return { s, sources, timers, store };
  }
  const settle = () => new Promise((r) => setTimeout(r, 0));

  it("opens the stream with a ticket, never the token", async () => {
    const { s, sources } = stream(async () => "t k/1");
    s.start();
    expect(sources).toHaveLength(0); // not before the ticket is there
    await settle();
    expect(sources[0].url).toBe("/api/webhook?ticket=t%20k%2F1");
    expect(sources[0].url).not.toContain("access_token");
  });

  it("keeps the resume id and adds the ticket", async () => {
    const store = new AlertStore();
    store.add({ id: "7-1", type: "x", severity: "info", title: "t", ts: "2025-01-01T00:00:00Z" });
    const { s, sources } = stream(async () => "tk", store);
    s.start();
    await settle();
    expect(sources[0].url).toBe("/api/webhook?last_event_id=7-1&ticket=tk");
  });

  it("has no ticket when there is none (auth off) or no ticket source", async () => {
    const a = stream(async () => null);
    a.s.start();
    await settle();
    expect(a.sources[0].url).toBe("/api/webhook");
    const b = stream(undefined);
    b.s.start();
    expect(b.sources[0].url).toBe("/api/webhook");
  });

  it("gets a new single-use ticket for every connection", async () => {
    let n = 0;
    const { s, sources, timers } = stream(async () => `ticket-${++n}`);
    s.start();
    await settle();
    sources[0].onerror?.(new Event("error"));
    timers.shift()!();
    await settle();
    expect(sources[1].url).toBe("/api/webhook?ticket=ticket-2");
    s.restart();
    await settle();
    expect(sources[1].closed).toBe(true);
    expect(sources[2].url).toBe("/api/webhook?ticket=ticket-3");
    expect(s.state).toBe("connecting");
  });

  it("retries later when no ticket can be had, and a late ticket after stop() opens nothing", async () => {
    let fail = true;
    const { s, sources, timers } = stream(async () => {
      if (fail) throw new Error("401");
      return "ok";
    });
    s.start();
    await settle();
    expect(sources).toHaveLength(0);
    expect(s.state).toBe("reconnecting");
    fail = false;
    timers.shift()!();
    await settle();
    expect(sources[0].url).toBe("/api/webhook?ticket=ok");
    let release: (t: string) => void = () => {};
    const slow = stream(() => new Promise<string>((r) => (release = r)));
    slow.s.start();
    slow.s.stop();
    release("late");
    await settle();
    expect(slow.sources).toHaveLength(0);
  });
});

describe("views", () => {
  beforeEach(() => {
    localStorage.clear();
    document.body.innerHTML = "";
  });
  afterEach(() => {
    vi.unstubAllGlobals();
    localStorage.clear();
  });

  it("the header signs in with a token, shows who, and signs out", async () => {
    document.body.innerHTML = '<div id="auth"></div><div id="signin-root"></div>';
    const { mountAuth } = await import("../src/views/auth");
    const { s, tokens } = session();
    mountAuth(s);
    await s.check();
    const panel = document.querySelector<HTMLElement>("#signin")!;
    const input = document.querySelector<HTMLInputElement>("#signin-token")!;
    const form = document.querySelector<HTMLFormElement>("#signin-form")!;
    const msg = document.querySelector<HTMLElement>("#signin-msg")!;
    expect(panel.hidden).toBe(false);
    expect(input.type).toBe("password");
    expect(document.querySelector("#signin-hint")!.textContent).toContain("outputs/credentials.txt");
    expect(document.querySelector("#auth-who")!.textContent).toBe("Not signed in");

    input.value = "nope";
    form.dispatchEvent(new Event("submit", { cancelable: true }));
    await vi.waitFor(() => expect(msg.textContent).toBe("That token was refused: invalid or expired token"));
    expect(panel.hidden).toBe(false);

    input.value = "vic-token";
    form.dispatchEvent(new Event("submit", { cancelable: true }));
    await vi.waitFor(() => expect(document.querySelector("#auth-who")!.textContent).toBe("vic (viewer)"));
    expect(panel.hidden).toBe(true);
    expect(tokens.get()).toBe("vic-token");
    expect(input.value).toBe("");

    const signOut = document.querySelector<HTMLButtonElement>("#sign-out")!;
    expect(signOut.hidden).toBe(false);
    signOut.click();
    await vi.waitFor(() => expect(panel.hidden).toBe(false));
    expect(tokens.get()).toBeNull();
  });

  it("with auth off shows only anonymous (admin)", async () => {
    document.body.innerHTML = '<div id="auth"></div><div id="signin-root"></div>';
    const { mountAuth } = await import("../src/views/auth");
    const { s } = session(undefined, null, async () => json(200, ANON));
    mountAuth(s);
    await s.check();
    expect(document.querySelector("#auth-who")!.textContent).toBe("anonymous (admin)");
    expect(document.querySelector<HTMLElement>("#sign-out")!.hidden).toBe(true);
    expect(document.querySelector<HTMLElement>("#signin")!.hidden).toBe(true);
  });

  it("a 403 from the deployment form shows the API's message there", async () => {
    document.body.innerHTML = '<div id="deployments-root"></div><button id="deployments-refresh"></button>';
    localStorage.setItem(TOKEN_KEY, "vic-token");
    const calls: Call[] = [];
    vi.stubGlobal("fetch", fakeApi(calls));
    const { mountDeployments } = await import("../src/views/deployments");
    mountDeployments();
    const form = document.querySelector<HTMLFormElement>("#deploy-form")!;
    form.querySelector<HTMLInputElement>("[name=name]")!.value = "web";
    form.querySelector<HTMLInputElement>("[name=model]")!.value = "iris";
    form.dispatchEvent(new Event("submit", { cancelable: true }));
    const note = document.querySelector("#deployments-root .form-note")!;
    await vi.waitFor(() => expect(note.textContent).toBe("Not created: vic may not create modeldeployments in namespace default"));
    expect(note.classList.contains("error")).toBe(true);
    expect(header(calls[0], "Authorization")).toBe("Bearer vic-token"); // the page's client sends the stored token
  });
});
