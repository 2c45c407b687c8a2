import { AlertStore, AlertStream, severityRank, type ConnectionState } from "../lib/alerts";
import { api, apiUrl, loadFailure } from "../lib/api";
import { $, h, localTime, render, timeAgo } from "../lib/dom";
import { deploymentHash } from "../lib/series";
import { tokens } from "../lib/token";
import type { AlertEvent } from "../lib/types";
import { notifyAlert } from "./notify";

const STATE_TEXT: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  stopped: "Offline",
};

/** One alert; one that names a deployment links to the deployment's page. */
export function alertItem(a: AlertEvent): HTMLLIElement {
  const model = a.model ? `${a.model}${a.version ? ` v${a.version}` : ""}` : "";
  const deployment = a.deployment
    ? h("a", { href: deploymentHash(a.namespace, a.deployment), class: "dep-link", dataset: { deploymentLink: `${a.namespace ? `${a.namespace}/` : ""}${a.deployment}` } }, `deployment ${a.namespace ? `${a.namespace}/` : ""}${a.deployment}`)
    : null;
  const subject = [model, model && deployment ? " · " : "", deployment].filter(Boolean) as (string | HTMLElement)[];
  return h(
    "li",
    { class: `alert sev-${a.severity}`, dataset: { alertId: a.id, type: a.type, severity: a.severity, jobId: a.data?.job_id } },
    h("span", { class: "badge" }, a.severity),
    h(
      "div",
      { class: "alert-body" },
      h("p", { class: "alert-title" }, a.title),
      a.message ? h("p", { class: "alert-msg" }, a.message) : null,
      h(
        "p",
        { class: "alert-meta" },
        h("code", null, a.type),
        subject.length ? " · " : "",
        ...subject,
        " · ",
        h("time", { datetime: a.ts, title: localTime(a.ts) }, timeAgo(a.ts)),
      ),
    ),
  );
}

export interface AlertsView {
  store: AlertStore;
  stream: AlertStream;
  /** Load the recent alerts, then (re)open the stream with the current token. */
  reload: () => Promise<void>;
  /** Signed out: close the stream and forget what was shown. */
  signedOut: () => void;
}

/** Mount the alert list and the connection indicator (idle until `reload()`); `onAlert` sees each new live alert. */
export function mountAlerts(onAlert: (a: AlertEvent) => void): AlertsView {
  const list = $("#alert-list");
  const count = $("#alert-count");
  const msg = $("#alerts-msg");
  const filter = $("#alert-filter") as HTMLSelectElement;
  const announcer = $("#alert-announcer");
  const conn = $("#conn");
  const store = new AlertStore(500);

  const draw = () => {
    const min = severityRank(filter.value);
    const shown = store.list.filter((a) => severityRank(a.severity) >= min);
    render(list, shown.map(alertItem));
    count.textContent = store.size ? `(${shown.length}${shown.length !== store.size ? ` of ${store.size}` : ""})` : "";
    if (store.size) msg.textContent = "";
  };
  store.subscribe(draw);
  filter.addEventListener("change", draw);
  // keep the relative times fresh
  setInterval(() => {
    for (const t of list.querySelectorAll("time")) t.textContent = timeAgo(t.getAttribute("datetime"));
  }, 30_000);

  const stream = new AlertStream({
    url: apiUrl("/webhook"),
    store,
    // signed in: a fresh single-use ticket per connection, never the token in the URL
    ticket: async () => (tokens.get() ? (await api.alertTicket()).ticket : null),
    onState: (state, retryInMs) => {
      conn.dataset.state = state;
      const text =
        state === "reconnecting" && retryInMs ? `Reconnecting in ${Math.ceil(retryInMs / 1000)}s…` : STATE_TEXT[state];
      $(".conn-text", conn).textContent = text;
      conn.title = `Alert stream: ${text}`;
    },
    onAlert: (a) => {
      announcer.textContent = `New ${a.severity} alert: ${a.title}`;
      notifyAlert(a);
      onAlert(a);
    },
  });

  // a reload overtaken by a newer one (or by a sign-out) must not start the stream
  let generation = 0;
  const reload = async () => {
    const run = ++generation;
    stream.stop();
    msg.textContent = "Loading alerts…";
    try {
      const recent = await api.alerts(100);
      if (run !== generation) return;
      store.add(...recent);
      if (!store.size) msg.textContent = "No alerts yet. They appear here as they happen.";
    } catch (e) {
      if (run !== generation) return;
      msg.textContent = loadFailure("recent alerts", e);
    }
    stream.restart();
  };
  const signedOut = () => {
    generation++;
    stream.stop();
    store.clear();
    msg.textContent = "Sign in to see alerts.";
  };

  return { store, stream, reload, signedOut };
}
