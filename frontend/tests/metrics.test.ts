import { describe, expect, it } from "vitest";
import { type ChartSample, chartPoints, formatMetric, metricEntries, primaryMetric, toUplotData, xRange, yRange } from "../src/lib/metrics";

const history: ChartSample[] = [
  { version: "2", created_at: "2025-01-02T00:00:00Z", metrics: { accuracy: 0.9, f1: 0.88 } },
  { version: "1", created_at: "2025-01-01T00:00:00Z", metrics: { accuracy: 0.8 } },
  { version: "3", created_at: "2025-01-03T00:00:00Z", metrics: { f1: 0.5 } }, // no accuracy: skipped
  { version: "4", created_at: "not a date", metrics: { accuracy: 1 } }, // bad time: skipped
];

describe("chart data", () => {
  it("maps history to time-ordered points of one metric", () => {
    const pts = chartPoints(history, "accuracy");
    expect(pts).toEqual([
      { t: Date.parse("2025-01-01T00:00:00Z") / 1000, value: 0.8, version: "1" },
      { t: Date.parse("2025-01-02T00:00:00Z") / 1000, value: 0.9, version: "2" },
    ]);
    expect(toUplotData(pts)).toEqual([[pts[0].t, pts[1].t], [0.8, 0.9]]);
    expect(chartPoints(undefined, "accuracy")).toEqual([]);
  });

  it("picks the primary metric", () => {
    expect(primaryMetric({ primary_metric: "r2", latest: null })).toBe("r2");
    expect(primaryMetric({ latest: { version: "1", created_at: "", metrics: { r2: 0.5, rmse: 1 } } })).toBe("r2");
    expect(primaryMetric({ latest: null, history: [] })).toBe("accuracy");
  });

  it("chooses a y range", () => {
    expect(yRange([])).toEqual([0, 1]);
    expect(yRange([{ t: 0, value: 0.93, version: "1" }])).toEqual([0.85, 1]);
    const [lo, hi] = yRange([{ t: 0, value: -2, version: "1" }, { t: 1, value: 3, version: "2" }]);
    expect(lo).toBeLessThan(-2);
    expect(hi).toBeGreaterThan(3);
  });

  it("pads the time axis, also around a single point", () => {
    expect(xRange([{ t: 1000, value: 1, version: "1" }])).toEqual([1000 - 3600, 1000 + 3600]);
    expect(xRange([{ t: 0, value: 1, version: "1" }, { t: 100, value: 1, version: "2" }])).toEqual([-5, 105]);
  });

  it("formats and orders metrics", () => {
    expect(formatMetric(0.93333333)).toBe("0.9333");
    expect(formatMetric(1)).toBe("1.0");
    expect(formatMetric(undefined)).toBe("–");
    expect(metricEntries({ f1: 0.1, accuracy: 0.2, recall: 0.3 }, "accuracy").map(([k]) => k)).toEqual(["accuracy", "f1", "recall"]);
  });
});
