// Browser notifications: off until the user opts in (and the browser grants permission).
import { $ } from "../lib/dom";
import { severityRank } from "../lib/alerts";
import type { AlertEvent } from "../lib/types";

const KEY = "mlstack.notifications";
let enabled = false;

function supported(): boolean {
  return typeof window !== "undefined" && "Notification" in window;
}

function paint(btn: HTMLElement): void {
  btn.setAttribute("aria-pressed", String(enabled));
  btn.textContent = enabled ? "Notifications on" : "Notifications off";
}

export function mountNotifyToggle(): void {
  const btn = $("#notify-toggle");
  if (!supported()) {
    btn.hidden = true;
    return;
  }
  enabled = localStorage.getItem(KEY) === "on" && Notification.permission === "granted";
  paint(btn);
  btn.addEventListener("click", async () => {
    if (enabled) {
      enabled = false;
    } else {
      const perm = Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
      enabled = perm === "granted";
      if (!enabled) btn.title = "The browser blocks notifications for this site.";
    }
    localStorage.setItem(KEY, enabled ? "on" : "off");
    paint(btn);
  });
}

/** Warning and above raise a notification while the page is in the background. */
export function notifyAlert(a: AlertEvent): void {
  if (!enabled || !supported() || Notification.permission !== "granted") return;
  if (severityRank(a.severity) < severityRank("warning") && a.type !== "training.finished") return;
  if (document.visibilityState === "visible") return;
  try {
    new Notification(`[${a.severity}] ${a.title}`, { body: a.message ?? "", tag: a.id });
  } catch {
    // some browsers only allow notifications from a service worker; the list still shows it
  }
}
