import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiClient } from "../src/lib/api";
import type { Deployment } from "../src/lib/types";
import { canaryButtons, row, versionText } from "../src/views/deployments";

const withCanary: Deployment = {
  name: "iris",
  namespace: "models",
  spec: { model: { name: "iris_model", version: "3" }, runtime: "pod", server: "onnx", canary: { version: "4", trafficPercent: 10 } },
  status: { phase: "Ready", resolvedVersion: "3", canaryVersion: "4", url: "http://iris.models.svc:8080" },
};
const plain: Deployment = { name: "plain", spec: { model: { name: "iris_model", alias: "champion" }, runtime: "pod" }, status: { phase: "Ready", resolvedVersion: "3" } };

afterEach(() => vi.restoreAllMocks());

describe("canary in the deployments table", () => {
  it("names the canary's version and exact share next to the stable version", () => {
    expect(versionText(withCanary)).toBe("v3 + canary v4 (10 %)");
    expect(versionText(plain)).toBe("v3");
    const shadowed = (status: Deployment["status"]): Deployment => ({
      ...plain, spec: { ...plain.spec!, shadow: { alias: "challenger", percent: 20 } }, status });
    expect(versionText(shadowed({ phase: "Ready", resolvedVersion: "3", shadowVersion: "5" }))).toBe("v3 + shadow v5 (20 % mirrored)");
    expect(versionText(shadowed({ phase: "Deploying", resolvedVersion: "3" }))).toBe("v3 + shadow @challenger (20 % mirrored)");
  });

  it("has a Promote and an Abort button only when there is a canary", () => {
    const tr = row(withCanary, async () => {});
    const labels = [...tr.querySelectorAll("button")].map((b) => b.textContent);
    expect(labels).toEqual(["Promote canary", "Abort canary", "Delete"]);
    expect([...row(plain, async () => {}).querySelectorAll("button")].map((b) => b.textContent)).toEqual(["Delete"]);
    expect(canaryButtons(plain, async () => {})).toEqual([]);
  });

  it.each([["promote"], ["abort"]] as const)("%s is one POST with the namespace, then a refresh", async (action) => {
    const calls: { url: string; init?: RequestInit }[] = [];
    const client = new ApiClient(async (url: string, init?: RequestInit) => {
      calls.push({ url, init });
      return new Response(JSON.stringify({ metadata: { name: "iris", namespace: "models" }, spec: { model: { name: "iris_model", version: "4" }, runtime: "pod" } }), { status: 200, headers: { "Content-Type": "application/json" } });
    });
    vi.spyOn(window, "confirm").mockReturnValue(true);
    let refreshed = 0;
    const [promote, abort] = canaryButtons(withCanary, async () => void refreshed++, client);
    (action === "promote" ? promote : abort).click();
    await vi.waitFor(() => expect(refreshed).toBe(1));
    expect(calls).toHaveLength(1);
    expect(calls[0].url).toBe(`/api/deployments/iris/canary/${action}?namespace=models`);
    expect(calls[0].init?.method).toBe("POST");
  });

  it("asks first and says why it failed (409: no canary any more)", async () => {
    const client = new ApiClient(async () => new Response(JSON.stringify({ detail: "ModelDeployment models/iris has no canary to promote" }), { status: 409, headers: { "Content-Type": "application/json" } }));
    const confirm = vi.spyOn(window, "confirm").mockReturnValueOnce(false).mockReturnValueOnce(true);
    const alert = vi.spyOn(window, "alert").mockImplementation(() => {});
    let refreshed = 0;
    const [promote] = canaryButtons(withCanary, async () => void refreshed++, client);
    promote.click();
    expect(confirm).toHaveBeenCalledTimes(1);
    expect(refreshed).toBe(0); // declined: nothing sent
    promote.click();
    await vi.waitFor(() => expect(refreshed).toBe(1));
    expect(alert).toHaveBeenCalledWith("Promote canary failed: ModelDeployment models/iris has no canary to promote");
  });
});
