// The API client. Every path is relative to API_BASE ("/api"): nginx (cluster) or `mlstack dashboard`
// (local) proxies it to the API, so the page never names a host.
import type {
  AlertEvent,
  Deployment,
  DeploymentCreate,
  DeploymentMonitoring,
  InferenceRequest,
  InferenceResponse,
  MetricsResponse,
  ModelVersion,
  OrgBudget,
  OrgCreate,
  OrgInvite,
  OrgInviteCreate,
  OrgJoin,
  OrgJoined,
  OrgView,
  RegisteredModel,
  TrainingJob,
  TrainingRequest,
  WhoAmI,
} from "./types";
import { tokens } from "./token";

export const API_BASE = "/api";

export function apiUrl(path: string): string {
  return API_BASE + (path.startsWith("/") ? path : `/${path}`);
}

/** A failed API call: HTTP status (0 = no response) and a message fit to show a user. */
export class ApiError extends Error {
  readonly status: number;
  readonly detail: unknown;
  /** The whole JSON answer (e.g. a refused package's `{detail, problems}`), when it was JSON. */
  readonly body: unknown;

  constructor(status: number, message: string, detail?: unknown, body?: unknown) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.body = body;
  }

  /** A refused request's `problems`: every reason, one string each (empty when the API gave none). */
  get problems(): string[] {
    const p = this.body && typeof this.body === "object" ? (this.body as { problems?: unknown }).problems : undefined;
    return Array.isArray(p) ? p.map((x) => (typeof x === "string" ? x : JSON.stringify(x))) : [];
  }

  /** No or a refused token (401): the user has to sign in. */
  get unauthorized(): boolean {
    return this.status === 401;
  }

  /** A valid token without the permission (403); the message says who may not do what. */
  get forbidden(): boolean {
    return this.status === 403;
  }

  /** The endpoint does not exist (yet) on this API: 404 on a collection route, 405, 501. */
  get unavailable(): boolean {
    return this.status === 404 || this.status === 405 || this.status === 501;
  }
}

/** FastAPI's `detail`: a string, or a list of pydantic errors `{loc, msg}`, or anything JSON. */
export function describeDetail(detail: unknown): string {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        if (d && typeof d === "object" && "msg" in d) {
          const loc = Array.isArray((d as { loc?: unknown }).loc)
            ? ((d as { loc: unknown[] }).loc.filter((p) => p !== "body").join("."))
            : "";
          return loc ? `${loc}: ${(d as { msg: string }).msg}` : String((d as { msg: string }).msg);
        }
        return typeof d === "string" ? d : JSON.stringify(d);
      })
      .join("; ");
  }
  if (typeof detail === "object" && "message" in (detail as object)) {
    return String((detail as { message: unknown }).message);
  }
  return JSON.stringify(detail);
}

/** Why a panel shows nothing: "Sign in to see <what>." after a 401, else "Could not load <what>: <why>". */
export function loadFailure(what: string, e: unknown): string {
  if (e instanceof ApiError && e.unauthorized) return `Sign in to see ${what}.`;
  return `Could not load ${what}: ${e instanceof Error ? e.message : String(e)}`;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
  /** The token for this call instead of the stored one (`null`: none), e.g. to try a token before storing it. */
  token?: string | null;
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Told of every 401, with the token that call carried (null: none). */
export type UnauthorizedListener = (error: ApiError, tokenUsed: string | null) => void;

export interface ApiClientOptions {
  /** The token to send as `Authorization: Bearer …` (read on every call); none when it returns null. */
  token?: () => string | null;
}

export class ApiClient {
  private readonly fetchImpl: FetchLike;
  private readonly token: () => string | null;
  private readonly unauthorizedListeners = new Set<UnauthorizedListener>();

  constructor(fetchImpl?: FetchLike, options: ApiClientOptions = {}) {
    this.fetchImpl = fetchImpl ?? ((input, init) => fetch(input, init));
    this.token = options.token ?? (() => null);
  }

  /** The token calls carry now (null: none). */
  currentToken(): string | null {
    return this.token();
  }

  /** Listen for 401 answers (the page then asks for a token); returns the unsubscribe. */
  onUnauthorized(fn: UnauthorizedListener): () => void {
    this.unauthorizedListeners.add(fn);
    return () => this.unauthorizedListeners.delete(fn);
  }

  async request<T>(path: string, opts: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    const token = opts.token !== undefined ? opts.token : this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    const init: RequestInit = { method: opts.method ?? "GET", signal: opts.signal, headers };
    if (opts.body instanceof FormData) {
      init.body = opts.body;
    } else if (opts.body !== undefined) {
      init.body = JSON.stringify(opts.body);
      init.headers = { ...init.headers, "Content-Type": "application/json" };
    }
    let res: Response;
    try {
      res = await this.fetchImpl(apiUrl(path), init);
    } catch (e) {
      if ((e as Error)?.name === "AbortError") throw e;
      throw new ApiError(0, "The API is unreachable (network error).");
    }
    const text = await res.text();
    let data: unknown = undefined;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = undefined;
      }
    }
    if (!res.ok) {
      const detail = data && typeof data === "object" && "detail" in data ? (data as { detail: unknown }).detail : undefined;
      const msg = describeDetail(detail) || `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
      const err = new ApiError(res.status, msg, detail, data);
      if (err.unauthorized) for (const fn of this.unauthorizedListeners) fn(err, token ?? null);
      throw err;
    }
    if (text && data === undefined) throw new ApiError(res.status, "The API answered with something that is not JSON.");
    return data as T;
  }

  // who the API takes this page for (with `token`: who that token is, without storing it)
  me(token?: string | null) {
    return this.request<WhoAmI>("/auth/me", token === undefined ? {} : { token });
  }

  // alerts
  alerts(limit = 100) {
    return this.request<AlertEvent[]>(`/alerts?limit=${limit}`);
  }

  /** A single-use, short-lived ticket that opens the alert stream once (EventSource cannot send the token). */
  alertTicket() {
    return this.request<{ ticket: string; expires_in: number }>("/alerts/ticket", { method: "POST" });
  }

  // metrics and models
  metrics() {
    return this.request<MetricsResponse>("/get_metrics");
  }
  models() {
    return this.request<RegisteredModel[]>("/models");
  }
  setAlias(model: string, alias: string, version: string) {
    return this.request<unknown>(`/models/${enc(model)}/aliases/${enc(alias)}`, { method: "PUT", body: { version } });
  }
  deleteAlias(model: string, alias: string) {
    return this.request<unknown>(`/models/${enc(model)}/aliases/${enc(alias)}`, { method: "DELETE" });
  }
  patchModel(model: string, patch: { description?: string; tags?: Record<string, string> }) {
    return this.request<unknown>(`/models/${enc(model)}`, { method: "PATCH", body: patch });
  }
  patchVersion(model: string, version: string, patch: { description?: string; tags?: Record<string, string> }) {
    return this.request<unknown>(`/models/${enc(model)}/versions/${enc(version)}`, { method: "PATCH", body: patch });
  }
  /** "Save as new version": the same artifacts registered again as a new version of `model`. */
  copyVersion(model: string, version: string, body: { description?: string; tags?: Record<string, string>; aliases?: string[] } = {}) {
    return this.request<ModelVersion>(`/models/${enc(model)}/versions/${enc(version)}/copy`, { method: "POST", body });
  }
  /** A model package (multipart, field `file`) to `path` (the upload route with the model filled in). */
  uploadPackage(path: string, form: FormData, signal?: AbortSignal) {
    return this.request<ModelVersion>(path, { method: "POST", body: form, signal });
  }

  // training and inference
  trigger(req: TrainingRequest) {
    return this.request<TrainingJob>("/trigger_training", { method: "POST", body: req });
  }
  training(jobId: string) {
    return this.request<TrainingJob>(`/training/${enc(jobId)}`);
  }
  /** DELETE /training/{id}: the record says `cancelled` at once; 409 when the job has already ended */
  cancelTraining(jobId: string) {
    return this.request<TrainingJob>(`/training/${enc(jobId)}`, { method: "DELETE" });
  }
  trainings(limit = 10) {
    return this.request<TrainingJob[]>(`/training?limit=${limit}`);
  }
  inference(req: InferenceRequest) {
    return this.request<InferenceResponse>("/inference", { method: "POST", body: req });
  }

  // deployments
  async deployments() {
    return (await this.request<RawDeployment[]>("/deployments")).map(flattenDeployment);
  }
  async deployment(name: string, namespace?: string | null) {
    const q = namespace ? `?namespace=${enc(namespace)}` : "";
    return flattenDeployment(await this.request<RawDeployment>(`/deployments/${enc(name)}${q}`));
  }
  async createDeployment(d: DeploymentCreate) {
    return flattenDeployment(await this.request<RawDeployment>("/deployments", { method: "POST", body: d }));
  }
  deleteDeployment(name: string, namespace?: string) {
    const q = namespace ? `?namespace=${enc(namespace)}` : "";
    return this.request<unknown>(`/deployments/${enc(name)}${q}`, { method: "DELETE" });
  }
  /** The canary becomes the stable version (``promote``) or is removed (``abort``): one call; 409 without one. */
  async canary(action: "promote" | "abort", name: string, namespace?: string) {
    const q = namespace ? `?namespace=${enc(namespace)}` : "";
    return flattenDeployment(await this.request<RawDeployment>(`/deployments/${enc(name)}/canary/${action}${q}`, { method: "POST" }));
  }

  /** The deployment page: its monitoring time series since `since` (unix seconds) and its deployment.* alerts. */
  deploymentMonitoring(name: string, namespace?: string | null, since?: number) {
    const q = new URLSearchParams();
    if (namespace) q.set("namespace", namespace);
    if (since !== undefined) q.set("since", String(Math.floor(since)));
    const qs = q.toString();
    return this.request<DeploymentMonitoring>(`/deployments/${enc(name)}/monitoring${qs ? `?${qs}` : ""}`);
  }

  // organisations (cluster mode; local mode answers 501)
  orgs() {
    return this.request<OrgView[]>("/orgs");
  }
  org(name: string) {
    return this.request<OrgView>(`/orgs/${enc(name)}`);
  }
  createOrg(body: OrgCreate) {
    return this.request<OrgView>("/orgs", { method: "POST", body });
  }
  setOrgBudget(name: string, budget: OrgBudget) {
    return this.request<OrgView>(`/orgs/${enc(name)}`, { method: "PATCH", body: { budget } });
  }
  createInvite(org: string, body: OrgInviteCreate) {
    return this.request<OrgInvite>(`/orgs/${enc(org)}/invites`, { method: "POST", body });
  }
  removeMember(org: string, name: string) {
    return this.request<unknown>(`/orgs/${enc(org)}/members/${enc(name)}`, { method: "DELETE" });
  }
  /** Redeem an invite code: the code is the credential, so no token is sent (nor a stale one refused). */
  joinOrg(body: OrgJoin) {
    return this.request<OrgJoined>("/orgs/join", { method: "POST", body, token: null });
  }

  // what the API offers (for optional features such as model package upload)
  openapi() {
    return this.request<OpenApiDoc>("/openapi.json");
  }
}

export interface OpenApiSchema {
  type?: string;
  format?: string;
  maxLength?: number;
  description?: string;
  properties?: Record<string, OpenApiSchema>;
  [key: string]: unknown;
}

export interface OpenApiDoc {
  paths?: Record<string, Record<string, { summary?: string; requestBody?: { content?: Record<string, { schema?: OpenApiSchema } | undefined> } }>>;
}

export interface UploadRoute {
  path: string;
  summary: string;
  /** The largest file the API says it takes (`maxLength` of the `file` field), else null: not stated. */
  maxBytes: number | null;
}

/** The first POST route under /models that takes a multipart body (a model package upload), if any. */
export function findUploadRoute(doc: OpenApiDoc): UploadRoute | null {
  for (const [path, ops] of Object.entries(doc.paths ?? {})) {
    const post = ops.post;
    const multipart = post?.requestBody?.content?.["multipart/form-data"];
    if (path.startsWith("/models") && multipart) {
      const max = multipart.schema?.properties?.file?.maxLength;
      return { path, summary: post.summary ?? "", maxBytes: typeof max === "number" && max > 0 ? max : null };
    }
  }
  return null;
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

/** The page's client: sends the stored token (see ./token). */
export const api = new ApiClient(undefined, { token: () => tokens.get() });

/** The API answers ModelDeployments as Kubernetes objects (``metadata.name``); the views use ``name``. */
export type RawDeployment = Omit<Deployment, "name"> & { name?: string; metadata?: { name: string; namespace?: string } };

export function flattenDeployment(d: RawDeployment): Deployment {
  return { ...d, name: d.metadata?.name ?? d.name ?? "", namespace: d.metadata?.namespace ?? d.namespace };
}
