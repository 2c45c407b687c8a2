import "./style.css";
import { mountAlerts } from "./views/alerts";
import { mountDeployments } from "./views/deployments";
import { mountMetrics } from "./views/metrics";
import { mountModels } from "./views/models";
import { mountNotifyToggle } from "./views/notify";
import { mountPredict } from "./views/predict";
import { mountTheme } from "./views/theme";
import { mountTrain } from "./views/train";

const metrics = mountMetrics();
const models = mountModels();
const deployments = mountDeployments();
mountTheme(() => metrics.redraw());
mountNotifyToggle();

// Alerts drive the other panels: a finished training or a deployment change refreshes what it touched.
const refreshSoon = debounce(() => {
  void metrics.refresh();
  void models.refresh();
}, 300);
const refreshDeploymentsSoon = debounce(() => void deployments.refresh(), 300);

mountAlerts((a) => {
  if (a.type.startsWith("training.") || a.type.startsWith("model.")) refreshSoon();
  if (a.type.startsWith("deployment.")) refreshDeploymentsSoon();
});
mountTrain(() => refreshSoon());
mountPredict();

void metrics.refresh();
void models.refresh();
void deployments.refresh();
// deployments change phase on their own; metrics' 7-day window moves: refresh both now and then
setInterval(() => void deployments.refresh(), 15_000);
setInterval(() => void metrics.refresh(), 60_000);

function debounce(fn: () => void, ms: number): () => void {
  let t: ReturnType<typeof setTimeout> | undefined;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}
