// Model packages: the upload form's checks and body, "save as new version", and how a refusal reads.
//
// The bounds mirror the API (`POST /models/{name}/versions`, fastapi/mlstack/api/routes/packages.py):
// the model name and aliases follow the vocabulary (./patterns.ts, generated from mlstack_operator.contract),
// the reserved names mlstack/packages/service.py. The size limit is not guessed: it is used only once the API states it
// (the file field's `maxLength` in /openapi.json, or the limit a 413 names).
import { ApiError } from "./api";
import { parseTags, type Errors, type Result } from "./forms";
import { follows, MODEL_ALIAS, MODEL_NAME } from "./patterns";

const RESERVED_ALIAS = /^(latest|v\d+|version\d+)$/i; // MLflow refuses these
export const MAX_DESCRIPTION = 5000;
const MAX_ALIASES = 20;

type Raw = Record<string, string | undefined>;

export interface UploadRequest {
  name: string;
  file: File;
  description?: string;
  tags?: Record<string, string>;
  aliases: string[];
}

export interface CopyRequest {
  description?: string;
  aliases?: string[];
}

/** Why `name` is not a model name the API takes, else null. */
export function modelNameError(name: string): string | null {
  if (!name) return "Required.";
  if (name.length > MODEL_NAME.max) return `At most ${MODEL_NAME.max} characters.`;
  if (!MODEL_NAME.pattern.test(name)) return "Letters, digits, '_', '.' and '-', starting with a letter or digit.";
  return null;
}

/** "candidate, staging" → ["candidate", "staging"] (deduplicated), or why not. */
export function parseAliases(text: string): { aliases: string[]; error: string | null } {
  const aliases = [...new Set(text.split(",").map((a) => a.trim()).filter(Boolean))];
  for (const a of aliases) {
    if (!follows(MODEL_ALIAS, a)) return { aliases, error: `"${a}" is not an alias: a letter, then letters, digits, '_' or '-', at most ${MODEL_ALIAS.max}.` };
    if (RESERVED_ALIAS.test(a)) return { aliases, error: `"${a}" is reserved by MLflow.` };
  }
  if (aliases.length > MAX_ALIASES) return { aliases, error: `At most ${MAX_ALIASES} aliases.` };
  return { aliases, error: null };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** Why `file` cannot be uploaded (not a .zip, empty, over a limit the API stated), else null. */
export function fileError(file: File | null | undefined, maxBytes: number | null = null): string | null {
  if (!file) return "Choose a .zip file.";
  if (!/\.zip$/i.test(file.name)) return `"${file.name}" is not a .zip file.`;
  if (file.size === 0) return `"${file.name}" is empty.`;
  if (maxBytes != null && file.size > maxBytes) {
    return `"${file.name}" is ${formatBytes(file.size)}; the API takes at most ${formatBytes(maxBytes)}.`;
  }
  return null;
}

/** The upload form (name, description, tags, aliases) and its file → what to send, or every field's error. */
export function parseUpload(raw: Raw, file: File | null | undefined, maxBytes: number | null = null): Result<UploadRequest> {
  const e: Errors = {};
  const name = (raw.name ?? "").trim();
  const nameErr = modelNameError(name);
  if (nameErr) e.name = nameErr;
  const fileErr = fileError(file, maxBytes);
  if (fileErr) e.file = fileErr;
  const description = (raw.description ?? "").trim();
  if (description.length > MAX_DESCRIPTION) e.description = `At most ${MAX_DESCRIPTION} characters.`;
  let tags: Record<string, string> = {};
  try {
    tags = parseTags(raw.tags ?? "");
  } catch (err) {
    e.tags = `${(err as Error).message} (use key=value, comma separated).`;
  }
  const { aliases, error: aliasErr } = parseAliases(raw.aliases ?? "");
  if (aliasErr) e.aliases = aliasErr;
  if (Object.keys(e).length || !file) return { ok: false, errors: e };
  const value: UploadRequest = { name, file, aliases };
  if (description) value.description = description;
  if (Object.keys(tags).length) value.tags = tags;
  return { ok: true, value };
}

/** The multipart body: `file`, and `description`, `tags` (a JSON object) and `aliases` (comma list) when given. */
export function uploadFormData(req: UploadRequest): FormData {
  const fd = new FormData();
  fd.append("file", req.file, req.file.name);
  if (req.description) fd.append("description", req.description);
  if (req.tags && Object.keys(req.tags).length) fd.append("tags", JSON.stringify(req.tags));
  if (req.aliases.length) fd.append("aliases", req.aliases.join(","));
  return fd;
}

/** "/models/{name}/versions" with the model filled in (encoded); null for a template with other holes. */
export function uploadPath(template: string, name: string): string | null {
  const path = template.replace(/\{name\}/g, encodeURIComponent(name));
  return path.includes("{") ? null : path;
}

/** The "save as new version" form → the copy body: the description only when edited, aliases when given. */
export function parseCopy(raw: Raw, sourceDescription: string | null | undefined): Result<CopyRequest> {
  const e: Errors = {};
  const description = (raw.description ?? "").trim();
  if (description.length > MAX_DESCRIPTION) e.description = `At most ${MAX_DESCRIPTION} characters.`;
  const { aliases, error } = parseAliases(raw.aliases ?? "");
  if (error) e.aliases = error;
  if (Object.keys(e).length) return { ok: false, errors: e };
  const value: CopyRequest = {};
  if (description !== (sourceDescription ?? "").trim()) value.description = description;
  if (aliases.length) value.aliases = aliases;
  return { ok: true, value };
}

/** The byte limit a 413's message names ("… larger than the limit of 6291456 bytes …"), else null. */
export function limitFromMessage(message: string): number | null {
  const m = /limit of (\d+) bytes/.exec(message);
  return m ? Number(m[1]) : null;
}

export interface UploadFailure {
  /** One line: what went wrong. */
  message: string;
  /** Every problem the API listed (a refused package's 422), else empty. */
  problems: string[];
  /** 401: the sign-in form takes over. */
  signIn: boolean;
  /** A 413's limit in bytes, when it names one. */
  limit: number | null;
}

/** A failed upload (or copy) as the form shows it. */
export function describeUploadFailure(e: unknown): UploadFailure {
  if (!(e instanceof ApiError)) {
    return { message: e instanceof Error ? e.message : String(e), problems: [], signIn: false, limit: null };
  }
  const problems = e.problems;
  let message = e.message;
  // "model package refused (2 problems): a; b" → "model package refused (2 problems)": the list says the rest
  const joined = `: ${problems.join("; ")}`;
  if (problems.length && message.endsWith(joined) && message.length > joined.length) message = message.slice(0, -joined.length);
  if (e.unauthorized) return { message: `Sign in first (${e.message}).`, problems: [], signIn: true, limit: null };
  if (e.status === 413) {
    return { message: message || "The package is larger than the API takes.", problems, signIn: false, limit: limitFromMessage(e.message) };
  }
  return { message, problems, signIn: false, limit: null };
}
