// Shapes of the API's JSON. The API-facing ones come from api-schema.d.ts, which openapi-typescript generates
// from openapi.json (the API's document, written offline by scripts/openapi.py): `npm run openapi` regenerates
// both, `npm run build` and tests/test_openapi_types.py fail when either is stale. Handwritten: view-only shapes
// and answers the API does not describe (yet).
import type { components } from "./api-schema";

/** A schema of the API's OpenAPI document, by name. */
export type Schema<Name extends keyof components["schemas"]> = components["schemas"][Name];

/** An answer's fields ``K`` that have defaults in the API's model: optional in the document, always sent. */
export type Sent<T, K extends keyof T> = Omit<T, K> & { [P in K]-?: Exclude<T[P], undefined> };

/** What the alert stream delivers: the API fills `id` and `ts` before it publishes an alert. */
export type AlertEvent = Sent<Schema<"AlertEvent">, "severity" | "ts"> & { id: string };
export type Severity = Schema<"AlertEvent">["severity"];

export type Metrics = Record<string, number>;

export type MetricsPoint = Schema<"VersionMetrics">;
export type MetricsResponse = Schema<"MetricsSummary">;

export type ModelVersion = Schema<"ModelVersionView">;
export type RegisteredModel = Schema<"RegisteredModelView">;

/** The training form's values: every field set (the API fills missing ones with the same defaults). */
export type Hyperparameters = Required<Schema<"Hyperparameters">>;
export type TrainingRequest = Schema<"TrainingRequest">;
export type TrainingJob = Schema<"TrainingJob">;
export type JobStatus = TrainingJob["status"];

export type InferenceRequest = Schema<"InferenceRequest">;
/** `predictions`: the model's answers, class indices, labels or values (the document says only "a list"). */
export type InferenceResponse = Omit<Schema<"InferenceResponse">, "predictions"> & { predictions: (number | string)[] };

export type DeploymentSpec = Schema<"ModelDeploymentSpec">;
export type DeploymentStatus = Schema<"ModelDeploymentStatus">;
export type DeploymentCreate = Schema<"DeploymentCreate">;

/** A ModelDeployment as the views use it: the API's object with `metadata.name`/`namespace` lifted (flattenDeployment). */
export interface Deployment {
  name: string;
  namespace?: string;
  spec: DeploymentSpec;
  status?: DeploymentStatus | null;
}

export type AuthMode = "off" | "tokens" | "kubernetes";

/** GET /auth/me: who the API takes the caller for (`kind` and `authMode` narrowed to the values the API answers). */
export type WhoAmI = Schema<"Me"> & { kind: "anonymous" | "token" | "kubernetes"; authMode: AuthMode };

// organisations (cluster mode)
export type OrgBudget = Schema<"Budget">;
export type OrgMember = Schema<"Member">;
export type OrgView = Sent<Schema<"OrgView">, "budget" | "used" | "members">;
export type OrgCreate = Schema<"OrgCreate">;
export type OrgInviteCreate = Schema<"InviteCreate">;
export type OrgInvite = Schema<"InviteView">;
export type OrgJoin = Schema<"JoinRequest">;
export type OrgJoined = Schema<"JoinResult">;

// GET /deployments/{name}/monitoring: the deployment page's time series (one point per monitor evaluation step)
export type TrackPoint = Schema<"TrackPoint">;
export type VersionPoint = Schema<"VersionPoint">;
export type SeriesPoint = Schema<"SeriesPoint">;
export type DeploymentMonitoring = Omit<Schema<"DeploymentMonitoring">, "alerts"> & { alerts: AlertEvent[] };
