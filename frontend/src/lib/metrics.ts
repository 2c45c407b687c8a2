// Mapping /get_metrics to what the chart and the tables show.
import type { Metrics, MetricsPoint } from "./types";

/** What the chart reads of a version. */
export type ChartSample = Pick<MetricsPoint, "version" | "created_at" | "metrics">;

/** The metric to chart: the API's `primary_metric`, else accuracy (classification) or r2 (regression). */
export function primaryMetric(m: {
  primary_metric?: string;
  latest: ChartSample | null;
  history?: readonly ChartSample[];
}): string {
  if (m.primary_metric) return m.primary_metric;
  const sample = m.latest?.metrics ?? m.history?.[0]?.metrics ?? {};
  return "accuracy" in sample || !("r2" in sample) ? "accuracy" : "r2";
}

export interface ChartPoint {
  /** seconds since the epoch (uPlot's x unit) */
  t: number;
  value: number;
  version: string;
}

/** One point per registered version that has the metric, oldest first. */
export function chartPoints(history: readonly ChartSample[] | undefined, metric: string): ChartPoint[] {
  const pts: ChartPoint[] = [];
  for (const h of history ?? []) {
    const v = h.metrics?.[metric];
    const ms = Date.parse(h.created_at ?? "");
    if (typeof v !== "number" || !Number.isFinite(v) || Number.isNaN(ms)) continue;
    pts.push({ t: ms / 1000, value: v, version: String(h.version) });
  }
  pts.sort((a, b) => a.t - b.t || Number(a.version) - Number(b.version));
  return pts;
}

/** uPlot's column data: [x[], y[]]. */
export function toUplotData(points: readonly ChartPoint[]): [number[], number[]] {
  return [points.map((p) => p.t), points.map((p) => p.value)];
}

/** A sensible y range: [0, 1] for scores in it, else padded around the data. */
export function yRange(points: readonly ChartPoint[]): [number, number] {
  if (!points.length) return [0, 1];
  const lo = Math.min(...points.map((p) => p.value));
  const hi = Math.max(...points.map((p) => p.value));
  if (lo >= 0 && hi <= 1) return [Math.max(0, Math.floor((lo - 0.05) * 20) / 20), 1];
  const pad = (hi - lo || Math.abs(hi) || 1) * 0.1;
  return [lo - pad, hi + pad];
}

/** The x range: the data padded by 5% (an hour each side for a single point). */
export function xRange(points: readonly ChartPoint[]): [number, number] {
  if (!points.length) {
    const now = Date.now() / 1000;
    return [now - 3600, now];
  }
  const lo = points[0].t, hi = points[points.length - 1].t;
  const pad = hi > lo ? (hi - lo) * 0.05 : 3600;
  return [lo - pad, hi + pad];
}

export function formatMetric(v: unknown): string {
  if (typeof v !== "number" || !Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  return v.toFixed(4).replace(/0+$/, "").replace(/\.$/, ".0");
}

/** Metrics in display order: the primary one first, then the rest alphabetically. */
export function metricEntries(metrics: Metrics | undefined | null, primary?: string): [string, number][] {
  const entries = Object.entries(metrics ?? {}).filter(([, v]) => typeof v === "number");
  return entries.sort(([a], [b]) => (a === primary ? -1 : b === primary ? 1 : a.localeCompare(b)));
}
