// The deployment page's pure parts: its hash route, the charts made of the monitor's time series, and the
// geometry of a small SVG line chart (no DOM here, so all of it is unit-tested).
import type { SeriesPoint } from "./types";

// -- the route: #/deployments/<namespace>/<name> (or #/deployments/<name>: the caller's namespace) -------------

export interface DeploymentRef {
  namespace: string | null;
  name: string;
}

const PREFIX = "#/deployments/";

export function deploymentHash(namespace: string | null | undefined, name: string): string {
  return PREFIX + (namespace ? `${encodeURIComponent(namespace)}/` : "") + encodeURIComponent(name);
}

/** The deployment a location hash names, or null when it is not a deployment page. */
export function parseDeploymentHash(hash: string): DeploymentRef | null {
  if (!hash.startsWith(PREFIX)) return null;
  const parts = hash.slice(PREFIX.length).split("/");
  try {
    const dec = parts.map((p) => decodeURIComponent(p));
    if (dec.some((p) => !p)) return null;
    if (dec.length === 1) return { namespace: null, name: dec[0] };
    if (dec.length === 2) return { namespace: dec[0], name: dec[1] };
  } catch {
    return null; // a malformed escape
  }
  return null;
}

// -- charts from points ---------------------------------------------------------------------------------------

/** [unix seconds, value or null: no value at that time (a gap)] */
export type XY = [number, number | null];

export interface Line {
  label: string;
  points: XY[];
}

export interface ChartSpec {
  id: "rate" | "latency" | "errors" | "accuracy" | "psi" | "shadow";
  title: string;
  unit: string;
  /** the y axis starts at 0 (rates, latencies) or spans [0, 1] (shares) */
  yFloor?: number;
  yCeil?: number;
  lines: Line[];
  /** a note under the chart (e.g. estimated from sampled requests) */
  note?: string;
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);

function versionsOf(points: readonly SeriesPoint[]): string[] {
  const vs = new Set<string>();
  for (const p of points) for (const v of Object.keys(p.versions ?? {})) vs.add(v);
  return [...vs].sort((a, b) => (Number(a) - Number(b)) || (a < b ? -1 : a > b ? 1 : 0));
}

function line(label: string, points: readonly SeriesPoint[], get: (p: SeriesPoint) => unknown): Line {
  return { label, points: points.map((p) => [p.ts, num(get(p))] as XY) };
}

const hasValue = (l: Line) => l.points.some(([, v]) => v !== null);

/** The page's charts: request rate, p50/p99 latency, error rate, accuracy (or RMSE), PSI per feature and shadow
 * agreement; a chart whose lines have no value at all is left out, lines without a value are dropped. */
export function chartsFor(points: readonly SeriesPoint[]): ChartSpec[] {
  const pts = [...points].sort((a, b) => a.ts - b.ts);
  const versions = versionsOf(pts);
  const vLabel = (v: string) => (v ? `v${v}` : "unknown version");
  const charts: ChartSpec[] = [];
  const add = (c: ChartSpec) => {
    const lines = c.lines.filter(hasValue);
    if (lines.length) charts.push({ ...c, lines });
  };

  const tracks = [...new Set(pts.flatMap((p) => Object.keys(p.tracks ?? {})))].sort();
  const counted = pts.some((p) => p.counted);
  add({
    id: "rate",
    title: "Request rate",
    unit: "req/s",
    yFloor: 0,
    lines: [
      line("all", pts, (p) => p.rate),
      ...(tracks.length > 1 ? tracks.map((t) => line(t, pts, (p) => p.tracks?.[t]?.rate)) : []),
    ],
    note: counted ? undefined : "estimated from the sampled requests and the sample rate",
  });
  add({
    id: "latency",
    title: "Latency",
    unit: "ms",
    yFloor: 0,
    lines: versions.flatMap((v) => [
      line(`${vLabel(v)} p50`, pts, (p) => p.versions?.[v]?.p50_ms),
      line(`${vLabel(v)} p99`, pts, (p) => p.versions?.[v]?.p99_ms),
    ]),
    note: "of the sampled requests",
  });
  add({
    id: "errors",
    title: "Error rate",
    unit: "share of requests (5xx)",
    yFloor: 0,
    lines: [
      line("all", pts, (p) => p.error_rate),
      ...(tracks.length > 1 ? tracks.map((t) => line(t, pts, (p) => p.tracks?.[t]?.error_rate)) : []),
    ],
  });
  const anyAccuracy = pts.some((p) => Object.values(p.versions ?? {}).some((v) => num(v.accuracy) !== null));
  add(
    anyAccuracy || !pts.some((p) => Object.values(p.versions ?? {}).some((v) => num(v.rmse) !== null))
      ? { id: "accuracy", title: "Online accuracy", unit: "from feedback", yFloor: 0, yCeil: 1, lines: versions.map((v) => line(vLabel(v), pts, (p) => p.versions?.[v]?.accuracy)) }
      : { id: "accuracy", title: "Online RMSE", unit: "from feedback", yFloor: 0, lines: versions.map((v) => line(vLabel(v), pts, (p) => p.versions?.[v]?.rmse)) },
  );
  const psiLines: Line[] = [];
  for (const v of versions) {
    const features = [...new Set(pts.flatMap((p) => Object.keys(p.versions?.[v]?.psi ?? {})))].sort();
    for (const f of features) psiLines.push(line(versions.length > 1 ? `${vLabel(v)} ${f}` : f, pts, (p) => p.versions?.[v]?.psi?.[f]));
  }
  add({ id: "psi", title: "Drift (PSI per feature)", unit: "PSI", yFloor: 0, lines: psiLines });
  const shadows = [...new Set(pts.flatMap((p) => Object.keys(p.shadow ?? {})))].sort();
  add({
    id: "shadow",
    title: "Shadow agreement",
    unit: "share of predictions",
    yFloor: 0,
    yCeil: 1,
    lines: shadows.map((s) => line(s === "shadow" ? "shadow" : `shadow ${vLabel(s)}`, pts, (p) => p.shadow?.[s]?.agreement)),
  });
  return charts;
}

/** At most `max` points: every k-th one, always keeping the last (the newest value is the one people read). */
export function downsample(points: readonly XY[], max: number): XY[] {
  if (points.length <= max || max < 2) return [...points];
  const k = Math.ceil(points.length / (max - 1));
  const out: XY[] = [];
  for (let i = 0; i < points.length - 1; i += k) out.push(points[i]);
  out.push(points[points.length - 1]);
  return out;
}

// -- geometry -------------------------------------------------------------------------------------------------

export interface Box {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

export const BOX: Box = { width: 360, height: 150, left: 44, right: 8, top: 8, bottom: 22 };

/** [min, max] of the values (y) with the chart's floor/ceiling; a flat line gets some room. */
export function yDomain(lines: readonly Line[], floor?: number, ceil?: number): [number, number] {
  const vs = lines.flatMap((l) => l.points.map(([, v]) => v)).filter((v): v is number => v !== null);
  let lo = vs.length ? Math.min(...vs) : 0;
  let hi = vs.length ? Math.max(...vs) : 1;
  if (floor !== undefined) lo = Math.min(lo, floor);
  if (ceil !== undefined) hi = Math.max(hi, ceil);
  if (hi === lo) {
    const pad = Math.abs(hi) * 0.1 || 1;
    hi += pad;
    if (floor === undefined || lo - pad >= floor) lo -= pad;
  }
  return [lo, hi];
}

export function xDomain(lines: readonly Line[]): [number, number] {
  const ts = lines.flatMap((l) => l.points.map(([t]) => t));
  if (!ts.length) return [0, 1];
  const lo = Math.min(...ts), hi = Math.max(...ts);
  return hi === lo ? [lo - 30, hi + 30] : [lo, hi];
}

function scale(v: number, [d0, d1]: [number, number], r0: number, r1: number): number {
  return r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
}

const round = (v: number) => Math.round(v * 10) / 10;

/** Where a value sits in the box: [x, y] in SVG units. */
export function position(t: number, v: number, x: [number, number], y: [number, number], box: Box = BOX): [number, number] {
  return [round(scale(t, x, box.left, box.width - box.right)), round(scale(v, y, box.height - box.bottom, box.top))];
}

/** The newest point of a line that has a value, or null. */
export function lastPoint(points: readonly XY[]): [number, number] | null {
  for (let i = points.length - 1; i >= 0; i--) {
    const [t, v] = points[i];
    if (v !== null) return [t, v];
  }
  return null;
}

/** A time label: with seconds when the chart spans less than 10 minutes. */
export function timeLabel(t: number, span: number): string {
  const opts: Intl.DateTimeFormatOptions = { hour: "2-digit", minute: "2-digit", ...(span < 600 ? { second: "2-digit" } : {}) };
  return new Date(t * 1000).toLocaleTimeString([], opts);
}

/** The SVG path of a line: a gap (null) starts a new segment; a lone point between gaps is a dot-sized stroke. */
export function linePath(points: readonly XY[], x: [number, number], y: [number, number], box: Box = BOX): string {
  const parts: string[] = [];
  let pen = false;
  for (let i = 0; i < points.length; i++) {
    const [t, v] = points[i];
    if (v === null) {
      pen = false;
      continue;
    }
    const [px, py] = position(t, v, x, y, box);
    const lone = !pen && (i + 1 >= points.length || points[i + 1][1] === null);
    parts.push(`${pen ? "L" : "M"}${px} ${py}`);
    if (lone) parts.push("h0.01"); // a round cap makes it a visible dot
    pen = true;
  }
  return parts.join(" ");
}

/** Points with a value (what a chart shows). */
export function valueCount(lines: readonly Line[]): number {
  return lines.reduce((n, l) => n + l.points.filter(([, v]) => v !== null).length, 0);
}

/** The newest value of a line, or null. */
export function lastValue(l: Line): number | null {
  return lastPoint(l.points)?.[1] ?? null;
}

/** A value for an axis label or a legend: 3 significant digits, no exponent for everyday magnitudes. */
export function formatValue(v: number | null): string {
  if (v === null) return "–";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 0.001) return String(Number(v.toPrecision(3)));
  return v.toExponential(1);
}
