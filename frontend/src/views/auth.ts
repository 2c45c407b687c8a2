// The header's identity ("vic (viewer)" + Sign out) and the sign-in form shown when the API wants a token.
import { identityDetails, identityLabel, SIGN_IN_HINT, type AuthState, type Session } from "../lib/auth";
import { $, h, render } from "../lib/dom";
import { TOKEN_KEY } from "../lib/token";

function hint(): HTMLElement {
  // the hint's `code` spans as code elements, the rest as text
  return h(
    "p",
    { class: "muted small", id: "signin-hint" },
    SIGN_IN_HINT.split("`").map((part, i) => (i % 2 ? h("code", null, part) : part)),
  );
}

export function mountAuth(session: Session): void {
  const who = h("span", { id: "auth-who", class: "who" });
  const signOut = h("button", { id: "sign-out", type: "button", class: "btn ghost", hidden: true }, "Sign out");
  const signInLink = h("button", { id: "sign-in-show", type: "button", class: "btn ghost", hidden: true }, "Sign in");
  render($("#auth"), who, signInLink, signOut);

  const input = h("input", {
    id: "signin-token",
    name: "token",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "signin-hint signin-msg",
  });
  const submit = h("button", { type: "submit", class: "btn primary" }, "Sign in");
  const msg = h("p", { id: "signin-msg", class: "form-note", role: "alert" });
  const mode = h("p", { class: "muted" });
  const form = h(
    "form",
    { id: "signin-form", class: "form inline-form", novalidate: true },
    h("label", { class: "field" }, h("span", null, "Access token"), input),
    submit,
  );
  const panel = h("section", { id: "signin", class: "signin", "aria-labelledby": "signin-h", hidden: true }, h("h2", { id: "signin-h" }, "Sign in"), mode, form, hint(), msg);
  render($("#signin-root"), panel);

  const showMessage = (text: string, error = true) => {
    msg.textContent = text;
    msg.classList.toggle("error", error && !!text);
  };

  const paint = (s: AuthState, prev: AuthState) => {
    const auth = $("#auth");
    auth.dataset.state = s.kind;
    signOut.hidden = true;
    signInLink.hidden = true;
    who.removeAttribute("title");
    switch (s.kind) {
      case "checking":
        who.textContent = "…";
        break;
      case "signed-in":
        who.textContent = identityLabel(s.me);
        who.title = identityDetails(s.me);
        signOut.hidden = !s.token && s.me.authMode === "off";
        break;
      case "signed-out":
        who.textContent = "Not signed in";
        signInLink.hidden = false;
        break;
      case "unknown":
        who.textContent = "";
        who.title = `Identity unknown: ${s.message}`;
        break;
    }
    panel.hidden = s.kind !== "signed-out";
    if (s.kind === "signed-out") {
      mode.textContent = `This API needs a token${s.authMode ? ` (auth mode: ${s.authMode})` : ""}.`;
      showMessage(s.message);
      if (prev.kind !== "signed-out") {
        // a fresh prompt (not a repeated 401 while the user types)
        input.value = "";
        submit.disabled = false;
        input.focus();
      }
    } else {
      input.value = "";
      showMessage("");
    }
  };
  session.subscribe(paint);
  paint(session.state, { kind: "checking" });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    showMessage("Checking the token…", false);
    try {
      const refused = await session.signIn(input.value);
      if (refused) {
        showMessage(refused);
        input.select();
        input.focus();
      }
    } finally {
      submit.disabled = false;
    }
  });
  signOut.addEventListener("click", () => void session.signOut());
  signInLink.addEventListener("click", () => {
    panel.scrollIntoView({ block: "nearest" });
    input.focus();
  });
  // signed in or out in another tab
  window.addEventListener("storage", (ev) => {
    if (ev.key === TOKEN_KEY || ev.key === null) void session.check();
  });
}
