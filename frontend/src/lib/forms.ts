// Form parsing and validation, mirroring the API's bounds so that most mistakes are caught before a
// request (the API still has the last word: its 422 messages are shown as they come).
import type { DeploymentCreate, Hyperparameters, InferenceRequest, ModelVersion } from "./types";
import { DEPLOYMENT_NAME, follows, MEMORY, MODEL_ALIAS, MODEL_NAME, MODEL_VERSION, NAMESPACE } from "./patterns";

/** How an alias reads (the API's rule: patterns.ts MODEL_ALIAS). */
export const ALIAS_RULE = `A letter, then letters, digits, '_' or '-', at most ${MODEL_ALIAS.max}.`;

export type Errors = Record<string, string>;
export type Result<T> = { ok: true; value: T } | { ok: false; errors: Errors };

type Raw = Record<string, string | undefined>;

function intField(raw: string | undefined, name: string, min: number, max: number, errors: Errors, dflt?: number | null) {
  const s = (raw ?? "").trim();
  if (s === "") {
    if (dflt !== undefined) return dflt;
    errors[name] = "Required.";
    return null;
  }
  if (!/^-?\d+$/.test(s)) {
    errors[name] = "Must be a whole number.";
    return null;
  }
  const n = Number(s);
  if (n < min || n > max) errors[name] = `Must be between ${min} and ${max}.`;
  return n;
}

function floatField(raw: string | undefined, name: string, min: number, max: number, errors: Errors, dflt?: number) {
  const s = (raw ?? "").trim();
  if (s === "") {
    if (dflt !== undefined) return dflt;
    errors[name] = "Required.";
    return NaN;
  }
  const n = Number(s);
  if (!Number.isFinite(n)) {
    errors[name] = "Must be a number.";
    return NaN;
  }
  if (n < min || n > max) errors[name] = `Must be between ${min} and ${max}.`;
  return n;
}

export const HYPERPARAMETER_DEFAULTS: Hyperparameters = {
  n_estimators: 100,
  max_depth: null,
  min_samples_split: 2,
  min_samples_leaf: 1,
  max_features: "sqrt",
  random_state: 42,
  test_size: 0.2,
};

/** Training form → `hyperparameters` (bounds as the API's `Hyperparameters` model). */
export function parseHyperparameters(raw: Raw): Result<Hyperparameters> {
  const e: Errors = {};
  const d = HYPERPARAMETER_DEFAULTS;
  const mf = (raw.max_features ?? "").trim();
  let max_features: Hyperparameters["max_features"] = d.max_features;
  if (mf === "sqrt" || mf === "log2") max_features = mf;
  else if (mf === "" || mf === "all" || mf === "none") max_features = mf === "" ? d.max_features : null;
  else {
    const f = Number(mf);
    if (!Number.isFinite(f) || f <= 0 || f > 1) e.max_features = "Use sqrt, log2, all, or a fraction in (0, 1].";
    else max_features = f;
  }
  const value: Hyperparameters = {
    n_estimators: intField(raw.n_estimators, "n_estimators", 1, 2000, e, d.n_estimators) as number,
    max_depth: intField(raw.max_depth, "max_depth", 1, 100, e, null),
    min_samples_split: intField(raw.min_samples_split, "min_samples_split", 2, 1000, e, d.min_samples_split) as number,
    min_samples_leaf: intField(raw.min_samples_leaf, "min_samples_leaf", 1, 1000, e, d.min_samples_leaf) as number,
    max_features,
    random_state: intField(raw.random_state, "random_state", 0, 2 ** 31 - 1, e, d.random_state) as number,
    test_size: floatField(raw.test_size, "test_size", 0.05, 0.5, e, d.test_size),
  };
  return Object.keys(e).length ? { ok: false, errors: e } : { ok: true, value };
}

export const IRIS_FEATURES = [
  { name: "sepal_length", label: "Sepal length (cm)", example: 5.1 },
  { name: "sepal_width", label: "Sepal width (cm)", example: 3.5 },
  { name: "petal_length", label: "Petal length (cm)", example: 1.4 },
  { name: "petal_width", label: "Petal width (cm)", example: 0.2 },
] as const;

export const IRIS_CLASSES = ["setosa", "versicolor", "virginica"];

export const FEATURES_TAG = "mlstack.features";

export interface FeatureField {
  name: string;
  label: string;
  example: number | "";
}

const IRIS_FIELDS: FeatureField[] = IRIS_FEATURES.map((f) => ({ ...f }));

/** The input fields of a model version: its feature names (the `mlstack.features` tag mirrors its signature),
 * with the iris labels and examples where the names are iris's; null when the version records none. */
export function featureFields(version?: Pick<ModelVersion, "tags"> | null): FeatureField[] | null {
  const raw = version?.tags?.[FEATURES_TAG] ?? "";
  const names = raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (!names.length) return null;
  return names.map((name) => {
    const iris = IRIS_FEATURES.find((f) => f.name === name);
    return iris ? { ...iris } : { name, label: name, example: "" };
  });
}

/** Class labels a model's answers can be shown with: iris names for the iris features, else none. */
export function classLabels(fields: FeatureField[] | null): readonly string[] {
  const iris = IRIS_FEATURES.map((f) => f.name);
  return fields && fields.length === iris.length && fields.every((f, i) => f.name === iris[i]) ? IRIS_CLASSES : [];
}

/** What serves a prediction: a model (with a version or an alias) or a deployment "namespace/name". */
export type PredictTarget = { model: string; version?: string; alias?: string } | { deployment: string };

/** "model:NAME" / "deployment:NS/NAME" (the predict form's select values) → a target; "" → the API default. */
export function parseTarget(target: string, version: string): PredictTarget | null {
  if (target.startsWith("deployment:")) return { deployment: target.slice("deployment:".length) };
  if (!target.startsWith("model:")) return null;
  const model = target.slice("model:".length);
  if (version.startsWith("@")) return { model, alias: version.slice(1) };
  return /^\d+$/.test(version) ? { model, version } : { model };
}

/** Predict form → `/inference` body: one finite value per feature (or, for a model without recorded features,
 * a comma-separated `values` field), an optional numeric version, and what serves it. */
export function parsePrediction(
  raw: Raw,
  fields: FeatureField[] | null = IRIS_FIELDS,
  target: PredictTarget | null = null,
): Result<InferenceRequest> {
  const e: Errors = {};
  let row: number[];
  if (fields) {
    row = fields.map((f) => floatField(raw[f.name], f.name, -1e12, 1e12, e));
  } else {
    const parts = (raw.values ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
    row = parts.map(Number);
    if (!parts.length) e.values = "Required: the feature values, comma-separated, in the model's order.";
    else if (row.some((n) => !Number.isFinite(n))) e.values = "Numbers only, comma-separated.";
  }
  const version = (raw.model_version ?? "").trim();
  if (version && !/^\d+$/.test(version)) e.model_version = "A version number, or empty for the champion.";
  if (Object.keys(e).length) return { ok: false, errors: e };
  const body: InferenceRequest = { input_data: row, ...(target ?? {}) };
  if (version) body.model_version = version;
  return { ok: true, value: body };
}

/** A class label for a prediction: iris names for 0..2, else the value as given. */
export function className(pred: number | string, classes: readonly string[] = IRIS_CLASSES): string {
  const n = typeof pred === "number" ? pred : /^\d+$/.test(pred) ? Number(pred) : NaN;
  return Number.isInteger(n) && n >= 0 && n < classes.length ? classes[n] : String(pred);
}

/** "a=1, b = two" → {a: "1", b: "two"}; throws on an entry without "=" or an empty key. */
export function parseTags(text: string): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const part of text.split(/[,\n]/)) {
    const p = part.trim();
    if (!p) continue;
    const i = p.indexOf("=");
    if (i <= 0) throw new Error(`"${p}" is not key=value`);
    tags[p.slice(0, i).trim()] = p.slice(i + 1).trim();
  }
  return tags;
}

/** Tags MLflow and mlstack set themselves (shown apart, not edited). */
export function isSystemTag(key: string): boolean {
  return key.startsWith("mlflow.") || key.startsWith("mlstack.");
}

/** User tags as "k=v, k2=v2" (system tags left out, or only those with `system`). */
export function formatTags(tags: Record<string, string> | undefined | null, system = false): string {
  return Object.entries(tags ?? {})
    .filter(([k]) => isSystemTag(k) === system)
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
}

/** Deployment form → `POST /deployments` body (a ModelDeployment's name and spec). */
export function parseDeployment(raw: Raw): Result<DeploymentCreate> {
  const e: Errors = {};
  const name = (raw.name ?? "").trim();
  if (!name) e.name = "Required.";
  else if (!follows(DEPLOYMENT_NAME, name)) e.name = `A lowercase letter, then lowercase letters, digits and '-', at most ${DEPLOYMENT_NAME.max}.`;
  const namespace = (raw.namespace ?? "").trim();
  if (namespace && !follows(NAMESPACE, namespace)) e.namespace = `Lowercase letters, digits and '-', at most ${NAMESPACE.max}.`;
  const model = (raw.model ?? "").trim();
  if (!model) e.model = "Required.";
  else if (!follows(MODEL_NAME, model)) e.model = "Letters, digits, '_', '.' and '-', starting with a letter or digit.";
  const ref = (raw.ref ?? "alias") === "version" ? "version" : "alias";
  const refValue = (raw.ref_value ?? "").trim();
  if (!refValue) e.ref_value = ref === "alias" ? "Name an alias, e.g. champion." : "Name a version number.";
  else if (ref === "version" && !follows(MODEL_VERSION, refValue)) e.ref_value = "A version number (1, 2, ...).";
  else if (ref === "alias" && !follows(MODEL_ALIAS, refValue)) e.ref_value = ALIAS_RULE;
  const runtime = raw.runtime === "vm" ? "vm" : "pod";
  const server = raw.server === "rayserve" ? "rayserve" : "onnx";
  const replicas = intField(raw.replicas, "replicas", 0, 100, e, 1) as number;
  let vm: DeploymentCreate["spec"]["vm"];
  if (runtime === "vm") {
    // spec.vm is required with runtime: vm (the CRD refuses one without the other)
    const image = (raw.vm_image ?? "").trim();
    if (!image) e.vm_image = "Required for a VM: a containerDisk image, e.g. quay.io/containerdisks/debian:12.";
    else if (image.length > 512 || /\s/.test(image)) e.vm_image = "An image reference without spaces.";
    const cores = intField(raw.vm_cores, "vm_cores", 1, 64, e, 1) as number;
    const memory = (raw.vm_memory ?? "").trim() || "2Gi";
    if (!follows(MEMORY, memory)) e.vm_memory = "A memory quantity, e.g. 2Gi.";
    vm = { image, cores, memory };
  }
  if (Object.keys(e).length) return { ok: false, errors: e };
  const spec: DeploymentCreate["spec"] = {
    model: ref === "alias" ? { name: model, alias: refValue } : { name: model, version: refValue },
    runtime,
    replicas,
  };
  if (runtime === "pod") spec.server = server;
  if (vm) spec.vm = vm;
  return { ok: true, value: namespace ? { name, namespace, spec } : { name, spec } };
}
