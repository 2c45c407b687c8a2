import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api, ApiError, loadFailure } from "../lib/api";
import { $, h, localTime, render } from "../lib/dom";
import { chartPoints, formatMetric, metricEntries, primaryMetric, toUplotData, xRange, yRange, type ChartPoint } from "../lib/metrics";
import type { Metrics } from "../lib/types";

function kv(el: HTMLElement, metrics: Metrics | undefined | null, primary: string, extra: [string, string][] = []) {
  const rows = [...extra, ...metricEntries(metrics, primary).map(([k, v]) => [k, formatMetric(v)] as [string, string])];
  render(el, rows.length ? rows.map(([k, v]) => [h("dt", null, k), h("dd", { dataset: { metric: k } }, v)]) : h("dd", { class: "muted" }, "none yet"));
}

function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

export function mountMetrics(): { refresh: () => Promise<void>; redraw: () => void } {
  const box = $("#chart");
  const msg = $("#metrics-msg");
  let plot: uPlot | null = null;
  let points: ChartPoint[] = [];
  let metric = "accuracy";

  const draw = () => {
    plot?.destroy();
    plot = null;
    box.replaceChildren();
    box.dataset.points = String(points.length);
    box.setAttribute("aria-label", `${metric} per version over time: ${points.map((p) => `v${p.version} ${formatMetric(p.value)}`).join(", ") || "no data"}`);
    if (!points.length) {
      box.append(h("p", { class: "chart-empty muted" }, "No trained versions yet: train one below."));
      return;
    }
    const stroke = cssVar("--accent", "#2563eb");
    const axis = { stroke: cssVar("--fg-muted", "#666"), grid: { stroke: cssVar("--border", "#ddd"), width: 1 }, ticks: { show: false } };
    const width = Math.max(240, box.clientWidth || 600);
    plot = new uPlot(
      {
        width,
        height: 220,
        scales: { x: { time: true, range: () => xRange(points) }, y: { range: () => yRange(points) } },
        axes: [axis, { ...axis, size: 56 }],
        legend: { show: true },
        cursor: { drag: { x: false, y: false } },
        series: [
          // with no cursor on the chart the legend shows the latest version
          { label: "registered", value: (_u, v) => new Date((v ?? points[points.length - 1].t) * 1000).toLocaleString() },
          {
            label: metric,
            stroke,
            width: 2,
            points: { show: true, size: 8, fill: stroke },
            value: (_u, v, _s, idx) => {
              const p = v == null || idx == null ? points[points.length - 1] : points[idx];
              return `${formatMetric(p.value)} (v${p.version})`;
            },
          },
        ],
      },
      toUplotData(points),
      box,
    );
  };

  new ResizeObserver(() => {
    if (plot && Math.abs(plot.width - box.clientWidth) > 8) plot.setSize({ width: Math.max(240, box.clientWidth), height: 220 });
  }).observe(box);

  const refresh = async () => {
    try {
      const m = await api.metrics();
      metric = primaryMetric(m);
      points = chartPoints(m.history, metric);
      msg.textContent = "";
      $("#metrics-model").textContent = m.model_name ? `· ${m.model_name}` : "";
      $("#chart-caption").textContent = points.length ? `${metric} of each registered version, by registration time` : "";
      $("#chart-metric-col").textContent = metric;
      render(
        $("#chart-table"),
        points.map((p) => h("tr", null, h("td", null, `v${p.version}`), h("td", null, localTime(new Date(p.t * 1000).toISOString())), h("td", null, formatMetric(p.value)))),
      );
      const latest = m.latest;
      kv($("#latest-metrics"), latest?.metrics, metric, latest ? [["version", `v${latest.version}`], ["registered", localTime(latest.created_at)]] : []);
      kv($("#avg-metrics"), m.last_7_days?.averages, metric, [["runs", String(m.last_7_days?.runs ?? 0)]]);
      draw();
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        points = [];
        msg.textContent = "No model registered yet: train one below.";
        kv($("#latest-metrics"), null, metric);
        kv($("#avg-metrics"), null, metric);
        draw();
      } else {
        msg.textContent = loadFailure("metrics", e);
      }
    }
  };
  $("#metrics-refresh").addEventListener("click", () => void refresh());
  return { refresh, redraw: draw };
}
