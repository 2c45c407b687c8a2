// Organisations (cluster mode): Kubernetes quantities, budget against usage, and the /orgs forms' bodies.
// Pure functions, so the panel's arithmetic and what it sends are tested without a page.
import { ApiError } from "./api";
import type { Errors, Result } from "./forms";
import type { OrgBudget, OrgCreate, OrgInviteCreate, OrgJoin, OrgView } from "./types";
import { CPU, follows, MEMORY, ORG_NAME, SERVICE_ACCOUNT_NAME } from "./patterns";

type Raw = Record<string, string | undefined>;

const SUFFIX: Record<string, number> = {
  n: 1e-9, u: 1e-6, m: 1e-3, "": 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};
const QUANTITY = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkKMGTPE]))?$/;

/** A Kubernetes quantity as a number: "500m" → 0.5, "1.5" → 1.5, "2Gi" → 2147483648, "1e3" → 1000; null if not one. */
export function parseQuantity(q: string | number | null | undefined): number | null {
  if (typeof q === "number") return Number.isFinite(q) ? q : null;
  const m = QUANTITY.exec((q ?? "").trim());
  if (!m) return null;
  const n = Number(m[1]) * (m[2] ? Number(`1${m[2]}`) : SUFFIX[m[3] ?? ""]);
  return Number.isFinite(n) ? n : null;
}

function trim(n: number, digits: number): string {
  return String(Number(n.toFixed(digits)));
}

/** CPU cores for a person: 0.5 → "500m", 1.5 → "1.5", 4 → "4". */
export function formatCpu(cores: number): string {
  if (cores !== 0 && Math.abs(cores) < 1) return `${Math.round(cores * 1000)}m`;
  return trim(cores, 3);
}

/** Bytes in binary units: 536870912 → "512Mi", 1610612736 → "1.5Gi", 0 → "0". */
export function formatMemory(bytes: number): string {
  const units = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${trim(v, 1)}${units[i]}`;
}

export const BUDGET_RESOURCES = [
  { id: "cpu", key: "requests.cpu", label: "CPU", unit: "cores", format: formatCpu },
  { id: "memory", key: "requests.memory", label: "Memory", unit: "", format: formatMemory },
  { id: "gpu", key: "requests.nvidia.com/gpu", label: "GPU", unit: "", format: (n: number) => trim(n, 3) },
] as const;

export type BudgetResource = (typeof BUDGET_RESOURCES)[number]["id"];

export interface UsageRow {
  id: BudgetResource;
  label: string;
  /** The quota's hard limit (null: none set, or not a quantity). */
  hard: number | null;
  /** In use now (0 when the quota says nothing). */
  used: number;
  /** used / hard in [0, 1] for a bar (1 when something is used of a zero or missing budget). */
  fraction: number;
  /** Beyond the budget. */
  over: boolean;
  /** "500m of 2 cores", "1Gi of 8Gi", "0 of 0". */
  text: string;
}

/** Budget against usage for each resource, from GET /orgs/{org}'s `budget` and `used`. */
export function budgetUsage(org: Pick<OrgView, "budget" | "used">): UsageRow[] {
  return BUDGET_RESOURCES.map((r) => {
    const hard = parseQuantity(org.budget?.[r.key]);
    const used = parseQuantity(org.used?.[r.key]) ?? 0;
    const fraction = hard != null && hard > 0 ? Math.min(used / hard, 1) : used > 0 ? 1 : 0;
    const over = hard != null && used > hard;
    const unit = r.unit ? ` ${r.unit}` : "";
    const text = hard == null ? `${r.format(used)}${unit} (no limit)` : `${r.format(used)} of ${r.format(hard)}${unit}`;
    return { id: r.id, label: r.label, hard, used, fraction, over, text };
  });
}

/** The budget as the forms show it: {cpu, memory, gpu} strings from the quota's keys. */
export function budgetFields(budget: Record<string, string> | undefined): { cpu: string; memory: string; gpu: string } {
  return {
    cpu: budget?.["requests.cpu"] ?? "",
    memory: budget?.["requests.memory"] ?? "",
    gpu: budget?.["requests.nvidia.com/gpu"] ?? "",
  };
}

export const ROLES = ["viewer", "deployer", "admin"] as const;

function parseBudgetInto(raw: Raw, e: Errors): OrgBudget {
  const cpu = (raw.cpu ?? "").trim();
  const memory = (raw.memory ?? "").trim();
  const gpuText = (raw.gpu ?? "").trim();
  if (!cpu) e.cpu = "Required.";
  else if (!follows(CPU, cpu)) e.cpu = "Cores such as 2, 1.5 or 500m.";
  if (!memory) e.memory = "Required.";
  else if (!follows(MEMORY, memory)) e.memory = "Bytes such as 8Gi, 512Mi or 1G.";
  let gpu = 0;
  if (gpuText) {
    if (!/^\d+$/.test(gpuText)) e.gpu = "A whole number.";
    else if ((gpu = Number(gpuText)) > 1024) e.gpu = "At most 1024.";
  }
  return { cpu, memory, gpu };
}

/** "Change budget" → PATCH /orgs/{org} body. */
export function parseBudget(raw: Raw): Result<{ budget: OrgBudget }> {
  const e: Errors = {};
  const budget = parseBudgetInto(raw, e);
  return Object.keys(e).length ? { ok: false, errors: e } : { ok: true, value: { budget } };
}

/** "New organisation" → POST /orgs body. */
export function parseOrgCreate(raw: Raw): Result<OrgCreate> {
  const e: Errors = {};
  const name = (raw.name ?? "").trim();
  if (!name) e.name = "Required.";
  else if (!follows(ORG_NAME, name)) e.name = `Lowercase letters, digits and '-', at most ${ORG_NAME.max}.`;
  const displayName = (raw.displayName ?? "").trim();
  if (displayName.length > 200) e.displayName = "At most 200 characters.";
  const budget = parseBudgetInto(raw, e);
  if (Object.keys(e).length) return { ok: false, errors: e };
  return { ok: true, value: displayName ? { name, displayName, budget } : { name, budget } };
}

/** "Invite" → POST /orgs/{org}/invites body (expiry given in hours; the API takes at least 60 s). */
export function parseInvite(raw: Raw): Result<OrgInviteCreate> {
  const e: Errors = {};
  const role = (raw.role ?? "viewer") as NonNullable<OrgInviteCreate["role"]>;
  if (!ROLES.includes(role)) e.role = `One of ${ROLES.join(", ")}.`;
  const hoursText = (raw.hours ?? "").trim();
  const hours = hoursText === "" ? 24 : Number(hoursText);
  if (!Number.isFinite(hours) || hours <= 0) e.hours = "A positive number of hours.";
  else if (hours * 3600 < 60) e.hours = "At least one minute (0.02 hours).";
  if (Object.keys(e).length) return { ok: false, errors: e };
  return { ok: true, value: { role, expiresInSeconds: Math.round(hours * 3600) } };
}

/** "Join with a code" → POST /orgs/join body. */
export function parseJoin(raw: Raw): Result<OrgJoin> {
  const e: Errors = {};
  const code = (raw.code ?? "").trim();
  const name = (raw.name ?? "").trim();
  if (!code) e.code = "Paste the invite code.";
  else if (code.length < 8 || code.length > 200) e.code = "An invite code is 8 to 200 characters.";
  if (!name) e.name = "Required.";
  else if (!follows(SERVICE_ACCOUNT_NAME, name)) e.name = `Lowercase letters, digits and '-', at most ${SERVICE_ACCOUNT_NAME.max}.`;
  return Object.keys(e).length ? { ok: false, errors: e } : { ok: true, value: { code, name } };
}

/** Why an /orgs call failed, for the form that made it (the API's own words for 403/404/409/410/422). */
export function orgFailure(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.unauthorized) return "Sign in first (the API wants a token).";
    if (e.status === 501) return e.message || "Organisations need cluster mode.";
    return e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

/** The shell command that redeems a code (what to send a new member along with the code). */
export function joinCommand(apiBase: string, code: string, name = "<your-name>"): string {
  const body = JSON.stringify({ code, name });
  return `curl -X POST ${apiBase}/orgs/join -H 'content-type: application/json' -d '${body}'`;
}

/** Is the /orgs API there? `off` when it answers 501 (local mode). */
export type OrgsSupport = "on" | "off";
