import { describe, expect, it } from "vitest";
import { chartsFor, deploymentHash, downsample, formatValue, lastPoint, lastValue, linePath, parseDeploymentHash, position, timeLabel, valueCount, xDomain, yDomain, type XY } from "../src/lib/series";
import type { AlertEvent, Deployment, SeriesPoint } from "../src/lib/types";
import { alertItem } from "../src/views/alerts";
import { chartElement } from "../src/views/deployment";
import { row } from "../src/views/deployments";

const points: SeriesPoint[] = [
  {
    ts: 1000, seconds: 30, counted: true, requests: 300, errors: 3, rate: 10, error_rate: 0.01,
    tracks: { stable: { requests: 270, errors: 3, rate: 9, error_rate: 0.0111 }, canary: { requests: 30, errors: 0, rate: 1, error_rate: 0 } },
    versions: {
      "3": { sampled: 27, rate: 9, p50_ms: 2, p99_ms: 9, feedback: 40, accuracy: 0.95, psi: { sepal_length: 0.01, petal_length: 0.05 }, drifted: [] },
      "4": { sampled: 3, rate: 1, p50_ms: 3, p99_ms: 4 },
    },
    shadow: { "5": { agreement: 0.9, samples: 20 } },
  },
  {
    ts: 1030, seconds: 30, counted: true, requests: 330, errors: 0, rate: 11, error_rate: 0,
    tracks: { stable: { requests: 300, errors: 0, rate: 10, error_rate: 0 }, canary: { requests: 30, errors: 0, rate: 1, error_rate: 0 } },
    versions: { "3": { sampled: 30, rate: 10, p50_ms: 2.5, p99_ms: 12, feedback: 60, accuracy: 0.9, psi: { sepal_length: 0.02, petal_length: 0.8 }, drifted: ["petal_length"] } },
    shadow: { "5": { agreement: 0.95, samples: 40 } },
  },
];

describe("the deployment page's route", () => {
  it("round-trips namespace and name, escaping what a hash cannot hold", () => {
    expect(deploymentHash("models", "iris")).toBe("#/deployments/models/iris");
    expect(parseDeploymentHash("#/deployments/models/iris")).toEqual({ namespace: "models", name: "iris" });
    expect(parseDeploymentHash(deploymentHash("a b", "x/y"))).toEqual({ namespace: "a b", name: "x/y" });
    expect(parseDeploymentHash(deploymentHash(null, "iris"))).toEqual({ namespace: null, name: "iris" });
  });

  it("is not a deployment page for the panels' anchors or malformed hashes", () => {
    for (const h of ["", "#", "#deployments", "#alerts", "#/deployments/", "#/deployments/a/b/c", "#/deployments/a//", "#/deployments/%E0%A4%A"]) {
      expect(parseDeploymentHash(h)).toBeNull();
    }
  });
});

describe("charts from the monitor's points", () => {
  it("has rate, latency, errors, accuracy, PSI per feature and shadow agreement", () => {
    const charts = chartsFor(points);
    expect(charts.map((c) => c.id)).toEqual(["rate", "latency", "errors", "accuracy", "psi", "shadow"]);
    const byId = Object.fromEntries(charts.map((c) => [c.id, c]));
    expect(byId.rate.lines.map((l) => l.label)).toEqual(["all", "canary", "stable"]);
    expect(byId.rate.lines[0].points).toEqual([[1000, 10], [1030, 11]]);
    expect(byId.rate.note).toBeUndefined(); // counted by the servers
    expect(byId.latency.lines.map((l) => l.label)).toEqual(["v3 p50", "v3 p99", "v4 p50", "v4 p99"]);
    // v4 had no sampled request in the second interval: a gap, not a zero
    expect(byId.latency.lines[3].points).toEqual([[1000, 4], [1030, null]]);
    expect(byId.accuracy.lines.map((l) => l.label)).toEqual(["v3"]); // v4 had no feedback: no line
    expect(byId.psi.lines.map((l) => [l.label, lastValue(l)])).toEqual([["v3 petal_length", 0.8], ["v3 sepal_length", 0.02]]);
    expect(byId.shadow.lines.map((l) => [l.label, lastValue(l)])).toEqual([["shadow v5", 0.95]]);
    expect(byId.shadow.yCeil).toBe(1);
  });

  it("leaves out what the points do not have, and says when the rate is an estimate", () => {
    const sampledOnly: SeriesPoint[] = [{ ts: 5, rate: 2, versions: { "1": { sampled: 4, p50_ms: 1, p99_ms: 2 } } }];
    const charts = chartsFor(sampledOnly);
    expect(charts.map((c) => c.id)).toEqual(["rate", "latency"]);
    expect(charts[0].note).toMatch(/estimated/);
    expect(chartsFor([])).toEqual([]);
  });

  it("charts RMSE when the feedback is numeric only", () => {
    const reg: SeriesPoint[] = [{ ts: 1, versions: { "2": { rmse: 0.4, feedback: 30 } } }];
    const [c] = chartsFor(reg);
    expect([c.id, c.title, lastValue(c.lines[0])]).toEqual(["accuracy", "Online RMSE", 0.4]);
  });
});

describe("SVG line geometry", () => {
  it("scales into the box and breaks the line at gaps", () => {
    const pts: XY[] = [[0, 0], [10, 1], [20, null], [30, 1], [40, 0]];
    const box = { width: 100, height: 50, left: 0, right: 0, top: 0, bottom: 0 };
    expect(linePath(pts, [0, 40], [0, 1], box)).toBe("M0 50 L25 0 M75 0 L100 50");
    expect(linePath([[0, 1], [10, null]], [0, 10], [0, 2], box)).toBe("M0 25 h0.01"); // a lone point stays visible
    expect(linePath([[0, null]], [0, 1], [0, 1], box)).toBe("");
  });

  it("domains: floors and ceilings hold, a flat line gets room", () => {
    const l = (vs: (number | null)[]) => [{ label: "x", points: vs.map((v, i) => [i, v] as XY) }];
    expect(yDomain(l([2, 4]), 0)).toEqual([0, 4]);
    expect(yDomain(l([0.5, 0.7]), 0, 1)).toEqual([0, 1]);
    expect(yDomain(l([5, 5]))).toEqual([4.5, 5.5]);
    expect(yDomain(l([0, 0]), 0)).toEqual([0, 1]);
    expect(yDomain(l([null]))).toEqual([0, 1]);
    expect(xDomain(l([1]))).toEqual([-30, 30]);
    expect(valueCount(l([1, null, 2]))).toBe(2);
  });

  it("places the newest value and labels times (seconds on short spans)", () => {
    const box = { width: 100, height: 50, left: 0, right: 0, top: 0, bottom: 0 };
    expect(lastPoint([[0, 1], [10, 2], [20, null]])).toEqual([10, 2]);
    expect(lastPoint([[0, null]])).toBeNull();
    expect(position(10, 2, [0, 20], [0, 4], box)).toEqual([50, 25]);
    const t = Date.UTC(2026, 0, 1, 12, 34, 56) / 1000;
    expect(timeLabel(t, 60)).toMatch(/34.56/);
    expect(timeLabel(t, 3600)).not.toMatch(/56/);
  });

  it("downsamples keeping the first and the newest point", () => {
    const pts: XY[] = Array.from({ length: 1000 }, (_, i) => [i, i]);
    const d = downsample(pts, 100);
    expect(d.length).toBeLessThanOrEqual(100);
    expect(d[0]).toEqual([0, 0]);
    expect(d[d.length - 1]).toEqual([999, 999]);
    expect(downsample(pts.slice(0, 5), 100)).toHaveLength(5);
  });

  it("formats values for axes and legends", () => {
    expect([formatValue(null), formatValue(0), formatValue(0.123456), formatValue(12.345), formatValue(15000.4), formatValue(0.00001)]).toEqual(["–", "0", "0.123", "12.3", "15000", "1.0e-5"]);
  });
});

describe("the page's pieces in the DOM", () => {
  it("a chart is an SVG with one path per line and a legend with the newest values", () => {
    const psi = chartsFor(points).find((c) => c.id === "psi")!;
    const fig = chartElement(psi);
    expect(fig.dataset.chart).toBe("psi");
    expect(fig.dataset.points).toBe("4");
    const paths = [...fig.querySelectorAll("path.ts-line")];
    expect(fig.querySelectorAll("circle.ts-dot")).toHaveLength(2); // each line's newest value
    expect(paths.map((p) => p.getAttribute("data-series"))).toEqual(["v3 petal_length", "v3 sepal_length"]);
    expect(paths.every((p) => /^M[\d.]+ [\d.]+ L/.test(p.getAttribute("d") ?? ""))).toBe(true);
    expect(fig.querySelector(".ts-legend")?.textContent).toContain("v3 petal_length 0.8");
    expect(fig.querySelector("svg")?.getAttribute("aria-label")).toContain("Drift (PSI per feature): v3 petal_length 0.8");
  });

  it("an alert naming a deployment links to its page, one without does not", () => {
    const a: AlertEvent = { id: "1-0", type: "deployment.drift", severity: "warning", title: "drifted", ts: "2026-01-01T00:00:00Z", namespace: "models", deployment: "iris", model: "iris_model", version: "3" };
    const link = alertItem(a).querySelector<HTMLAnchorElement>("a.dep-link")!;
    expect(link.getAttribute("href")).toBe("#/deployments/models/iris");
    expect(link.textContent).toBe("deployment models/iris");
    expect(alertItem(a).querySelector(".alert-meta")?.textContent).toContain("iris_model v3 · deployment models/iris");
    expect(alertItem({ ...a, namespace: null, deployment: null }).querySelector("a")).toBeNull();
  });

  it("a deployment's row links to its page", () => {
    const d: Deployment = { name: "iris", namespace: "models", spec: { model: { name: "m", alias: "champion" }, runtime: "pod" } };
    expect(row(d, async () => {}).querySelector("th a")?.getAttribute("href")).toBe("#/deployments/models/iris");
  });
});
