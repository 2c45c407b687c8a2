// Light/dark: follows the system until the user picks one; the choice is remembered.
import { $ } from "../lib/dom";

const KEY = "mlstack.theme";
type Theme = "light" | "dark";

function systemTheme(): Theme {
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function mountTheme(onChange: () => void): void {
  const btn = $("#theme-toggle");
  const saved = localStorage.getItem(KEY);
  let theme: Theme = saved === "dark" || saved === "light" ? saved : systemTheme();
  const apply = () => {
    document.documentElement.dataset.theme = theme;
    btn.setAttribute("aria-pressed", String(theme === "dark"));
    btn.textContent = theme === "dark" ? "Dark theme" : "Light theme";
    btn.title = `Switch to ${theme === "dark" ? "light" : "dark"} theme`;
  };
  apply();
  btn.addEventListener("click", () => {
    theme = theme === "dark" ? "light" : "dark";
    localStorage.setItem(KEY, theme);
    apply();
    onChange();
  });
}
