// Shapes of the API's JSON (see the API's /docs). Optional fields are ones an older API may omit.

export type Severity = "info" | "warning" | "error" | "critical";

export interface AlertEvent {
  id: string;
  type: string;
  severity: Severity;
  title: string;
  message?: string;
  model?: string | null;
  version?: string | null;
  namespace?: string | null;
  deployment?: string | null;
  data?: Record<string, unknown> | null;
  ts: string;
}

export type Metrics = Record<string, number>;

export interface MetricsPoint {
  version: string;
  run_id?: string;
  created_at: string;
  metrics: Metrics;
}

export interface MetricsResponse {
  model_name: string;
  primary_metric?: string;
  latest: MetricsPoint | null;
  last_7_days: { runs: number; averages: Metrics };
  history?: MetricsPoint[];
}

export interface ModelVersion {
  version: string;
  created_at?: string;
  run_id?: string;
  description?: string | null;
  tags?: Record<string, string>;
  aliases?: string[];
  metrics?: Metrics;
}

export interface RegisteredModel {
  name: string;
  description?: string | null;
  tags?: Record<string, string>;
  aliases?: Record<string, string>;
  versions?: ModelVersion[];
}

export interface Hyperparameters {
  n_estimators: number;
  max_depth: number | null;
  min_samples_split: number;
  min_samples_leaf: number;
  max_features: "sqrt" | "log2" | number | null;
  random_state: number;
  test_size: number;
}

export interface TrainingRequest {
  hyperparameters: Hyperparameters;
  data_uri?: string;
  target?: string;
}

export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface TrainingJob {
  job_id: string;
  status: JobStatus;
  created_at?: string;
  started_at?: string | null;
  finished_at?: string | null;
  model_name?: string;
  task?: "classification" | "regression" | null;
  run_id?: string | null;
  version?: string | null;
  metrics?: Metrics;
  champion?: boolean;
  error?: string | null;
}

export interface InferenceRequest {
  input_data: number[] | number[][] | Record<string, number> | Record<string, number>[];
  model_version?: string;
  /** a registered model (with `version` or `alias`; default: the API's model at @champion) */
  model?: string;
  version?: string;
  alias?: string;
  /** "namespace/name" of a ModelDeployment: served through it */
  deployment?: string;
}

export interface InferenceResponse {
  model_name: string;
  model_version: string;
  predictions: (number | string)[];
  probabilities?: number[][] | null;
  latency_ms?: number;
  attempts?: number;
}

export interface DeploymentSpec {
  model: { name: string; alias?: string; version?: string };
  runtime: "pod" | "vm";
  server?: "onnx" | "rayserve";
  replicas?: number;
  vm?: { image: string; cores: number; memory: string };
  canary?: { version: string; trafficPercent: number } | null;
  [key: string]: unknown;
}

export interface DeploymentStatus {
  phase?: string;
  url?: string | null;
  resolvedVersion?: string | null;
  canaryVersion?: string | null;
  replicas?: number;
  readyReplicas?: number;
  queuePosition?: number | null;
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
}

export interface Deployment {
  name: string;
  namespace?: string;
  spec: DeploymentSpec;
  status?: DeploymentStatus | null;
}

export interface DeploymentCreate {
  name: string;
  namespace?: string;
  spec: DeploymentSpec;
}

export type AuthMode = "off" | "tokens" | "kubernetes";

/** GET /auth/me: who the API takes the caller for. */
export interface WhoAmI {
  name: string;
  kind: "anonymous" | "token" | "kubernetes";
  role: string | null;
  groups: string[];
  namespace: string;
  org: string | null;
  authMode: AuthMode;
}

// organisations (cluster mode)
export interface OrgBudget {
  cpu: string;
  memory: string;
  gpu: number;
}

export interface OrgMember {
  kind: string; // User, Group or ServiceAccount
  name: string;
  role: string;
  /** A ServiceAccount's namespace (a creator's may be another than the organisation's). */
  namespace?: string | null;
  /** Joined with an invite: only such members can be removed. */
  joined?: boolean;
}

export interface OrgView {
  name: string;
  namespace: string;
  displayName?: string | null;
  createdBy?: string | null;
  createdAt?: string | null;
  /** The ResourceQuota's hard limits: requests.cpu, requests.memory, requests.nvidia.com/gpu. */
  budget: Record<string, string>;
  /** What is in use, same keys. */
  used: Record<string, string>;
  members: OrgMember[];
}

export interface OrgCreate {
  name: string;
  displayName?: string;
  budget: OrgBudget;
}

export interface OrgInviteCreate {
  role: "viewer" | "deployer" | "admin";
  expiresInSeconds: number;
}

export interface OrgInvite {
  code: string;
  org: string;
  role: string;
  expiresAt: string;
}

export interface OrgJoin {
  code: string;
  name: string;
}

export interface OrgJoined {
  org: string;
  namespace: string;
  serviceAccount: string;
  role: string;
  token: string;
  expiresAt?: string | null;
}

// GET /deployments/{name}/monitoring: the deployment page's time series (one point per monitor evaluation step)
export interface TrackPoint {
  requests: number;
  errors: number;
  rate?: number | null;
  error_rate?: number | null;
}

export interface VersionPoint {
  sampled?: number | null;
  rate?: number | null;
  p50_ms?: number | null;
  p99_ms?: number | null;
  feedback?: number | null;
  accuracy?: number | null;
  rmse?: number | null;
  /** PSI per feature (and the prediction), when the window was judged for drift */
  psi?: Record<string, number> | null;
  drifted?: string[] | null;
}

export interface SeriesPoint {
  /** unix seconds */
  ts: number;
  /** the interval the point covers */
  seconds?: number | null;
  /** requests and errors counted by the model servers (else the rate is estimated from the sampled requests) */
  counted?: boolean;
  requests?: number | null;
  errors?: number | null;
  rate?: number | null;
  error_rate?: number | null;
  tracks?: Record<string, TrackPoint>;
  versions?: Record<string, VersionPoint>;
  /** shadow agreement by shadow version */
  shadow?: Record<string, { agreement: number; samples?: number | null }>;
}

export interface DeploymentMonitoring {
  namespace: string;
  name: string;
  since: number;
  step_seconds: number;
  points: SeriesPoint[];
  alerts: AlertEvent[];
}
