import { describe, expect, it } from "vitest";
import { ApiClient, ApiError, describeDetail, findUploadRoute, flattenDeployment, type RawDeployment } from "../src/lib/api";

function fakeFetch(status: number, body: string, calls: { url: string; init?: RequestInit }[] = []) {
  return async (url: string, init?: RequestInit) => {
    calls.push({ url, init });
    return new Response(body, { status, headers: { "Content-Type": "application/json" } });
  };
}

async function caught(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    return e as ApiError;
  }
  throw new Error("expected a rejection");
}

describe("ApiClient", () => {
  it("calls relative /api paths and sends JSON", async () => {
    const calls: { url: string; init?: RequestInit }[] = [];
    const c = new ApiClient(fakeFetch(202, JSON.stringify({ job_id: "j1", status: "queued" }), calls));
    const job = await c.trigger({ hyperparameters: { n_estimators: 10, max_depth: null, min_samples_split: 2, min_samples_leaf: 1, max_features: "sqrt", random_state: 1, test_size: 0.2 } });
    expect(job.job_id).toBe("j1");
    expect(calls[0].url).toBe("/api/trigger_training");
    expect(calls[0].init?.method).toBe("POST");
    expect(JSON.parse(String(calls[0].init?.body)).hyperparameters.n_estimators).toBe(10);
    expect((calls[0].init?.headers as Record<string, string>)["Content-Type"]).toBe("application/json");
  });

  it("cancels a training job with DELETE", async () => {
    const calls: { url: string; init?: RequestInit }[] = [];
    const c = new ApiClient(fakeFetch(200, JSON.stringify({ job_id: "j 1", status: "cancelled" }), calls));
    const job = await c.cancelTraining("j 1");
    expect(job.status).toBe("cancelled");
    expect(calls[0].url).toBe("/api/training/j%201");
    expect(calls[0].init?.method).toBe("DELETE");
    const e = await caught(new ApiClient(fakeFetch(409, JSON.stringify({ detail: "job j1 has already ended (succeeded)" }))).cancelTraining("j1"));
    expect(e.status).toBe(409);
    expect(e.message).toContain("already ended");
  });

  it("encodes path segments", async () => {
    const calls: { url: string; init?: RequestInit }[] = [];
    const c = new ApiClient(fakeFetch(200, "{}", calls));
    await c.setAlias("my model", "champ/1", "3");
    expect(calls[0].url).toBe("/api/models/my%20model/aliases/champ%2F1");
    expect(JSON.parse(String(calls[0].init?.body))).toEqual({ version: "3" });
  });

  it("turns a string detail into the error message", async () => {
    const e = await caught(new ApiClient(fakeFetch(404, JSON.stringify({ detail: "model 'x' has no version 9" }))).inference({ input_data: [1, 2, 3, 4] }));
    expect(e).toBeInstanceOf(ApiError);
    expect(e.status).toBe(404);
    expect(e.message).toBe("model 'x' has no version 9");
    expect(e.unavailable).toBe(true);
  });

  it("summarises pydantic validation errors", async () => {
    const detail = [{ loc: ["body", "hyperparameters", "n_estimators"], msg: "Input should be less than or equal to 2000", type: "x" }];
    const e = await caught(new ApiClient(fakeFetch(422, JSON.stringify({ detail }))).metrics());
    expect(e.status).toBe(422);
    expect(e.message).toBe("hyperparameters.n_estimators: Input should be less than or equal to 2000");
    expect(e.unavailable).toBe(false);
  });

  it("copes with a non-JSON error page (e.g. a proxy's 502)", async () => {
    const f = async () => new Response("<html>Bad Gateway</html>", { status: 502, statusText: "Bad Gateway" });
    const e = await caught(new ApiClient(f).models());
    expect(e.status).toBe(502);
    expect(e.message).toBe("HTTP 502 Bad Gateway");
  });

  it("reports a network failure as status 0", async () => {
    const f = async () => {
      throw new TypeError("Failed to fetch");
    };
    const e = await caught(new ApiClient(f).models());
    expect(e.status).toBe(0);
    expect(e.message).toMatch(/unreachable/);
  });

  it("treats 501 as a feature not there yet", async () => {
    const e = await caught(new ApiClient(fakeFetch(501, JSON.stringify({ detail: "not implemented" }))).deployments());
    expect(e.unavailable).toBe(true);
  });

  it("rejects a 200 that is not JSON", async () => {
    const f = async () => new Response("<html>index</html>", { status: 200 });
    const e = await caught(new ApiClient(f).models());
    expect(e.message).toMatch(/not JSON/);
  });
});

describe("describeDetail", () => {
  it("handles every shape FastAPI uses", () => {
    expect(describeDetail(undefined)).toBe("");
    expect(describeDetail("x")).toBe("x");
    expect(describeDetail([{ loc: ["query", "limit"], msg: "bad" }, "plain"])).toBe("query.limit: bad; plain");
    expect(describeDetail({ message: "m" })).toBe("m");
    expect(describeDetail({ a: 1 })).toBe('{"a":1}');
  });
});

describe("findUploadRoute", () => {
  it("finds a multipart POST under /models", () => {
    const doc = {
      paths: {
        "/train": { post: { requestBody: { content: { "multipart/form-data": {} } } } },
        "/models/upload": { post: { summary: "Upload a model package", requestBody: { content: { "multipart/form-data": {} } } } },
      },
    };
    expect(findUploadRoute(doc)).toEqual({ path: "/models/upload", summary: "Upload a model package", maxBytes: null });
    expect(findUploadRoute({ paths: { "/models": { get: {} } } })).toBeNull();
  });
});

describe("flattenDeployment", () => {
  it("reads name and namespace from Kubernetes metadata", () => {
    const d = flattenDeployment({ metadata: { name: "iris", namespace: "models" }, spec: { model: { name: "m", alias: "champion" } } } as RawDeployment);
    expect(d.name).toBe("iris");
    expect(d.namespace).toBe("models");
  });
});
