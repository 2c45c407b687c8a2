import "./style.css";
import { api } from "./lib/api";
import { Session } from "./lib/auth";
import { tokens } from "./lib/token";
import { mountAlerts } from "./views/alerts";
import { mountAuth } from "./views/auth";
import { mountDeploymentPage } from "./views/deployment";
import { mountDeployments } from "./views/deployments";
import { mountMetrics } from "./views/metrics";
import { mountModels } from "./views/models";
import { mountOrgs } from "./views/orgs";
import { mountNotifyToggle } from "./views/notify";
import { mountPredict } from "./views/predict";
import { mountTheme } from "./views/theme";
import { mountTrain } from "./views/train";

const session = new Session(api, tokens);
mountAuth(session);
// organisations (cluster mode): probes /orgs once the page knows who it is, hidden on a 501 (local mode)
mountOrgs({ client: api, session });
const metrics = mountMetrics();
const models = mountModels();
const deployments = mountDeployments();
// #/deployments/<ns>/<name>: one deployment's monitoring charts and alerts (reached from its row or an alert)
const deploymentPage = mountDeploymentPage();
mountTheme(() => metrics.redraw());
mountNotifyToggle();

// Alerts drive the other panels: a finished training or a deployment change refreshes what it touched.
const refreshSoon = debounce(() => {
  void metrics.refresh();
  void models.refresh();
}, 300);
const refreshDeploymentsSoon = debounce(() => {
  void deployments.refresh();
  void deploymentPage.refresh(); // a new alert of the deployment shown shows up there too
}, 300);

const alerts = mountAlerts((a) => {
  if (a.type.startsWith("training.") || a.type.startsWith("model.")) refreshSoon();
  if (a.type.startsWith("deployment.")) refreshDeploymentsSoon();
});
mountTrain(() => refreshSoon());
mountPredict();

const refreshPanels = () => {
  void metrics.refresh();
  void models.refresh();
  void deployments.refresh();
  deploymentPage.route();
};
// Nothing loads until the page knows who it is. A sign-in (or a different user) reloads every panel and
// reconnects the alert stream with the new token; a sign-out empties them (the API then answers 401).
session.subscribe((state) => {
  if (state.kind === "signed-in" || state.kind === "unknown") {
    void alerts.reload();
    refreshPanels();
  } else if (state.kind === "signed-out") {
    alerts.signedOut();
    refreshPanels();
  }
});
void session.check();

// deployments change phase on their own; metrics' 7-day window moves: refresh both now and then
setInterval(() => session.open && void deployments.refresh(), 15_000);
setInterval(() => session.open && void deploymentPage.refresh(), 15_000); // only while a deployment page shows
setInterval(() => session.open && void metrics.refresh(), 60_000);

function debounce(fn: () => void, ms: number): () => void {
  let t: ReturnType<typeof setTimeout> | undefined;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}
