// The deployment page (#/deployments/<namespace>/<name>): the monitor's time series as small SVG line charts
// and the deployment's alerts. While it shows, the other panels are hidden; any other hash brings them back.
import { api, loadFailure } from "../lib/api";
import { $, h, localTime, render } from "../lib/dom";
import {
  BOX,
  chartsFor,
  downsample,
  formatValue,
  lastPoint,
  lastValue,
  linePath,
  parseDeploymentHash,
  position,
  timeLabel,
  valueCount,
  xDomain,
  yDomain,
  type ChartSpec,
  type DeploymentRef,
} from "../lib/series";
import { alertItem } from "./alerts";
import { versionText } from "./deployments";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2457c5", "#d97706", "#16794a", "#b42318", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const RANGES: [string, number][] = [
  ["1 h", 3600],
  ["6 h", 6 * 3600],
  ["24 h", 24 * 3600],
];
const MAX_DRAWN = 400; // points per line on a ~360 px wide chart

function svg(tag: string, attrs: Record<string, string | number>, ...children: (Node | string)[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

/** One chart: axes with min/max labels, a path per line, a legend with each line's newest value. */
export function chartElement(c: ChartSpec): HTMLElement {
  const lines = c.lines.map((l) => ({ ...l, points: downsample(l.points, MAX_DRAWN) }));
  const x = xDomain(lines);
  const y = yDomain(lines, c.yFloor, c.yCeil);
  const b = BOX;
  const plot = svg(
    "svg",
    { viewBox: `0 0 ${b.width} ${b.height}`, class: "ts-svg", role: "img", "aria-label": `${c.title}: ${c.lines.map((l) => `${l.label} ${formatValue(lastValue(l))}`).join(", ")}` },
    svg("line", { x1: b.left, y1: b.height - b.bottom, x2: b.width - b.right, y2: b.height - b.bottom, class: "ts-axis" }),
    svg("line", { x1: b.left, y1: b.top, x2: b.left, y2: b.height - b.bottom, class: "ts-axis" }),
    svg("text", { x: b.left - 4, y: b.top + 8, "text-anchor": "end", class: "ts-label" }, formatValue(y[1])),
    svg("text", { x: b.left - 4, y: b.height - b.bottom, "text-anchor": "end", class: "ts-label" }, formatValue(y[0])),
    svg("text", { x: b.left, y: b.height - 6, "text-anchor": "start", class: "ts-label" }, timeLabel(x[0], x[1] - x[0])),
    svg("text", { x: b.width - b.right, y: b.height - 6, "text-anchor": "end", class: "ts-label" }, timeLabel(x[1], x[1] - x[0])),
    ...lines.map((l, i) =>
      svg("path", { d: linePath(l.points, x, y), class: "ts-line", stroke: COLORS[i % COLORS.length], "data-series": l.label }),
    ),
    // each line's newest value, marked
    ...lines.flatMap((l, i) => {
      const p = lastPoint(l.points);
      if (!p) return [];
      const [cx, cy] = position(p[0], p[1], x, y);
      return [svg("circle", { cx, cy, r: 3, class: "ts-dot", fill: COLORS[i % COLORS.length] })];
    }),
  );
  return h(
    "figure",
    { class: "ts-chart", dataset: { chart: c.id, points: valueCount(c.lines) } },
    h("figcaption", null, h("strong", null, c.title), " ", h("span", { class: "muted" }, c.unit)),
    plot,
    h(
      "ul",
      { class: "ts-legend" },
      c.lines.map((l, i) =>
        h("li", null, h("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }), `${l.label} `, h("b", null, formatValue(lastValue(l)))),
      ),
    ),
    c.note ? h("p", { class: "muted small" }, c.note) : null,
  );
}

export interface DeploymentPage {
  /** Show the page the location hash names (or the panels when it names none). */
  route: () => void;
  /** Reload the shown deployment's data (after a sign-in). */
  refresh: () => Promise<void>;
}

export function mountDeploymentPage(main: HTMLElement = $("#main")): DeploymentPage {
  const title = h("h2", { id: "deployment-h" }, "Deployment");
  const serving = h("p", { id: "deployment-serving" });
  const status = h("p", { class: "muted", role: "status", id: "deployment-msg" });
  const range = h("select", { id: "deployment-range", "aria-label": "Time range" }, RANGES.map(([label, s]) => h("option", { value: s }, label)));
  const charts = h("div", { id: "deployment-charts", class: "ts-grid" });
  const alerts = h("ol", { id: "deployment-alerts", class: "alerts", "aria-label": "The deployment's alerts, newest first" });
  const section = h(
    "section",
    { id: "deployment-page", class: "card full", "aria-labelledby": "deployment-h", hidden: true },
    h(
      "div",
      { class: "card-head" },
      title,
      h("div", { class: "toolbar" }, h("label", { class: "inline" }, "Last ", range), h("button", { type: "button", class: "btn ghost", id: "deployment-refresh" }, "Refresh"), h("a", { href: "#deployments", class: "btn ghost" }, "All deployments")),
    ),
    serving,
    status,
    charts,
    h("h3", null, "Alerts"),
    alerts,
  );
  main.prepend(section);

  let current: DeploymentRef | null = null;
  let generation = 0;

  const refresh = async () => {
    const ref = current;
    if (!ref) return;
    const run = ++generation;
    const since = Date.now() / 1000 - Number(range.value);
    try {
      // what serves (stable, canary, shadow) beside its series; the series do not wait for it
      void api.deployment(ref.name, ref.namespace).then(
        (d) => {
          if (run === generation) serving.textContent = `${d.status?.phase ?? "Pending"}: serving ${versionText(d)}`;
        },
        () => {
          if (run === generation) serving.textContent = "";
        },
      );
      const m = await api.deploymentMonitoring(ref.name, ref.namespace, since);
      if (run !== generation) return;
      title.textContent = `Deployment ${m.namespace}/${m.name}`;
      const specs = chartsFor(m.points);
      render(charts, specs.map(chartElement));
      const last = m.points[m.points.length - 1];
      status.textContent = m.points.length
        ? `${m.points.length} points, one every ${m.step_seconds} s at most; latest ${localTime(new Date(last.ts * 1000).toISOString())}.`
        : "No monitoring data in this range yet: points appear as the monitor evaluates the deployment's sampled traffic (spec.monitoring.sampleRate).";
      render(alerts, [...m.alerts].reverse().map(alertItem));
      if (!m.alerts.length) render(alerts, h("li", { class: "muted" }, "No deployment alerts in this range."));
    } catch (e) {
      if (run !== generation) return;
      render(charts);
      render(alerts);
      status.textContent = loadFailure(`the monitoring of ${ref.namespace ? `${ref.namespace}/` : ""}${ref.name}`, e);
    }
  };

  const route = () => {
    const ref = parseDeploymentHash(window.location.hash);
    main.classList.toggle("deployment-mode", ref !== null); // the CSS hides the other panels meanwhile
    section.hidden = ref === null;
    if (ref === null) {
      current = null;
      generation++;
      const target = window.location.hash.length > 1 ? document.getElementById(decodeURIComponent(window.location.hash.slice(1))) : null;
      target?.scrollIntoView();
      return;
    }
    const changed = !current || current.name !== ref.name || current.namespace !== ref.namespace;
    current = ref;
    if (changed) {
      title.textContent = `Deployment ${ref.namespace ? `${ref.namespace}/` : ""}${ref.name}`;
      serving.textContent = "";
      status.textContent = "Loading…";
      render(charts);
      render(alerts);
    }
    window.scrollTo(0, 0);
    void refresh();
  };

  range.addEventListener("change", () => void refresh());
  $("#deployment-refresh", section).addEventListener("click", () => void refresh());
  window.addEventListener("hashchange", route);
  return { route, refresh };
}
