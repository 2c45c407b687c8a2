// Who the page is signed in as, and when it has to ask for a token.
//
// `check()` asks GET /auth/me with the stored token. With auth off the API answers "anonymous" (admin)
// and nothing is asked. A 401 on any call made with the stored token (or with none) means the page must
// ask for a token: a refused token is forgotten. `signIn()` tries a token on /auth/me before storing it,
// so a wrong one never replaces a working one. A 403 is not a sign-in matter: the view that made the
// call shows the API's message.
import { ApiError, type ApiClient } from "./api";
import type { TokenStore } from "./token";
import type { AuthMode, WhoAmI } from "./types";

export type AuthState =
  /** Asking /auth/me. */
  | { kind: "checking" }
  /** The API knows who this is (with auth off: "anonymous", admin). */
  | { kind: "signed-in"; me: WhoAmI; token: string | null }
  /** A token is needed; `message` says why an earlier one did not do (empty when none was tried). */
  | { kind: "signed-out"; authMode: AuthMode | null; message: string }
  /** /auth/me failed for another reason (an older API without it, or none reachable): carry on without. */
  | { kind: "unknown"; message: string };

export type AuthListener = (state: AuthState, previous: AuthState) => void;

export const SIGN_IN_HINT =
  "Use a token from outputs/credentials.txt (local) or `kubectl create token` / POST /orgs/join (cluster).";

/** "vic (viewer)", "anonymous (admin)", "alice (acme)": the name and the role, else the org. */
export function identityLabel(me: WhoAmI): string {
  const qualifier = me.role ?? me.org ?? (me.kind === "kubernetes" ? me.namespace : null);
  return qualifier ? `${me.name} (${qualifier})` : me.name;
}

/** One line of everything /auth/me said, for a tooltip. */
export function identityDetails(me: WhoAmI): string {
  const parts = [me.authMode === "off" ? "authentication off" : `signed in (${me.kind}, auth mode ${me.authMode})`];
  if (me.role) parts.push(`role ${me.role}`);
  if (me.org) parts.push(`org ${me.org}`);
  if (me.namespace) parts.push(`namespace ${me.namespace}`);
  if (me.groups?.length) parts.push(`groups ${me.groups.join(", ")}`);
  return parts.join(" · ");
}

function stateKey(s: AuthState): string {
  switch (s.kind) {
    case "signed-in":
      return `in\u0000${s.token ?? ""}\u0000${s.me.name}\u0000${s.me.role ?? ""}\u0000${s.me.org ?? ""}`;
    case "signed-out":
      return `out\u0000${s.message}`;
    default:
      return s.kind;
  }
}

export class Session {
  private current: AuthState = { kind: "checking" };
  private readonly listeners = new Set<AuthListener>();

  constructor(
    private readonly client: ApiClient,
    private readonly tokens: TokenStore,
  ) {
    client.onUnauthorized((e, used) => this.refused(e, used));
  }

  get state(): AuthState {
    return this.current;
  }

  /** May the panels call the API (signed in, or no way to tell)? */
  get open(): boolean {
    return this.current.kind === "signed-in" || this.current.kind === "unknown";
  }

  subscribe(fn: AuthListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Ask the API who the stored token (or no token) is. */
  async check(): Promise<AuthState> {
    const token = this.tokens.get();
    let me: WhoAmI;
    try {
      me = await this.client.me(token);
    } catch (e) {
      // a 401 already went through refused(); anything else: run as before auth existed
      if (!(e instanceof ApiError && e.unauthorized) && this.tokens.get() === token) {
        this.set({ kind: "unknown", message: e instanceof Error ? e.message : String(e) });
      }
      return this.current;
    }
    if (this.tokens.get() !== token) return this.current; // a sign-in or sign-out overtook this call
    if (me.authMode !== "off" && !token && me.kind === "anonymous") {
      this.set({ kind: "signed-out", authMode: me.authMode, message: "" });
    } else {
      this.set({ kind: "signed-in", me, token });
    }
    return this.current;
  }

  /** Try `token` on /auth/me and keep it if the API takes it; returns null, or why it was not taken. */
  async signIn(raw: string): Promise<string | null> {
    const token = raw.trim();
    if (!token) return "Paste a token first.";
    let me: WhoAmI;
    try {
      me = await this.client.me(token);
    } catch (e) {
      if (e instanceof ApiError && e.unauthorized) return `That token was refused: ${e.message}`;
      if (e instanceof ApiError && e.forbidden) return e.message;
      return `Could not check the token: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (me.authMode !== "off" && me.kind === "anonymous") return "The API did not recognise that token.";
    this.tokens.set(token);
    this.set({ kind: "signed-in", me, token: this.tokens.get() });
    return null;
  }

  /** Forget the token and ask again who this is (with auth on: nobody, so the sign-in form shows). */
  async signOut(): Promise<AuthState> {
    this.tokens.clear();
    this.set({ kind: "checking" });
    return this.check();
  }

  /** A call answered 401. Only a call made with the token in use now counts (not a stale or a trial one). */
  private refused(e: ApiError, used: string | null): void {
    if (used !== this.tokens.get()) return;
    if (this.current.kind === "signed-out" && !used) return; // already asking
    if (used) this.tokens.clear();
    const authMode = this.current.kind === "signed-in" ? this.current.me.authMode : null;
    this.set({
      kind: "signed-out",
      authMode: authMode === "off" ? null : authMode,
      message: used ? `The API refused the stored token (${e.message}). Sign in again.` : "",
    });
  }

  private set(next: AuthState): void {
    const prev = this.current;
    this.current = next;
    if (stateKey(prev) === stateKey(next)) return;
    for (const fn of this.listeners) fn(next, prev);
  }
}
