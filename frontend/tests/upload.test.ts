import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiClient, ApiError, findUploadRoute, type UploadRoute } from "../src/lib/api";
import {
  describeUploadFailure,
  fileError,
  limitFromMessage,
  modelNameError,
  parseAliases,
  parseCopy,
  parseUpload,
  uploadFormData,
  uploadPath,
} from "../src/lib/upload";
import type { ModelVersion } from "../src/lib/types";
import { copyForm, uploadForm } from "../src/views/packages";

type Call = { url: string; init?: RequestInit };

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

function zip(name = "model.zip", bytes = 10): File {
  return new File([new Uint8Array(bytes)], name, { type: "application/zip" });
}

const ROUTE: UploadRoute = { path: "/models/{name}/versions", summary: "Upload a model package (zip) as a new version", maxBytes: null };
/** A version as the API answers it (ModelVersionView): every field sent. */
function mv(version: string, more: Partial<ModelVersion> = {}): ModelVersion {
  return { version, created_at: null, run_id: null, status: "READY", description: "", tags: {}, aliases: [], metrics: {}, ...more };
}

const V3 = mv("3", { aliases: ["candidate"] });

describe("model names", () => {
  it("takes what the API's MODEL_NAME takes", () => {
    for (const ok of ["iris", "iris_model", "A.b-c_1", "7", "x".repeat(256)]) expect(modelNameError(ok)).toBeNull();
  });

  it("refuses what the API's MODEL_NAME refuses, with a reason", () => {
    expect(modelNameError("")).toBe("Required.");
    expect(modelNameError("x".repeat(257))).toBe("At most 256 characters.");
    for (const bad of ["-iris", "_iris", ".iris", "my model", "a/b", "iris?", "modèle"]) expect(modelNameError(bad)).toMatch(/^Letters, digits/);
  });
});

describe("aliases", () => {
  it("splits a comma list, trims and drops repeats", () => {
    expect(parseAliases(" candidate, staging ,,candidate")).toEqual({ aliases: ["candidate", "staging"], error: null });
    expect(parseAliases("")).toEqual({ aliases: [], error: null });
  });

  it("refuses what the API refuses", () => {
    expect(parseAliases("1st").error).toMatch(/not an alias/);
    expect(parseAliases("_x").error).toMatch(/not an alias/);
    expect(parseAliases("ok, latest").error).toMatch(/"latest" is reserved/);
    expect(parseAliases("V12").error).toMatch(/reserved/);
    expect(parseAliases("version2").error).toMatch(/reserved/);
  });
});

describe("the chosen file", () => {
  it("must be a non-empty .zip", () => {
    expect(fileError(null)).toBe("Choose a .zip file.");
    expect(fileError(zip("model.tar.gz"))).toBe('"model.tar.gz" is not a .zip file.');
    expect(fileError(zip("MODEL.ZIP"))).toBeNull();
    expect(fileError(zip("empty.zip", 0))).toBe('"empty.zip" is empty.');
  });

  it("is held to a limit only when the API stated one", () => {
    const big = zip("big.zip", 3 * 1024 * 1024);
    expect(fileError(big)).toBeNull();
    expect(fileError(big, 2 * 1024 * 1024)).toBe('"big.zip" is 3.0 MiB; the API takes at most 2.0 MiB.');
  });
});

describe("parseUpload and the multipart body", () => {
  it("reports every field's problem at once", () => {
    const r = parseUpload({ name: "bad name", aliases: "latest", tags: "novalue", description: "x".repeat(5001) }, zip("m.txt"));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(Object.keys(r.errors).sort()).toEqual(["aliases", "description", "file", "name", "tags"]);
  });

  it("builds file, description, tags (JSON) and aliases (comma list)", () => {
    const file = zip("iris_sklearn.zip");
    const r = parseUpload({ name: " iris ", description: " from a zip ", tags: "team=ml, stage=dev", aliases: "candidate, staging" }, file);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.name).toBe("iris");
    const fd = uploadFormData(r.value);
    expect([...fd.keys()]).toEqual(["file", "description", "tags", "aliases"]);
    const sent = fd.get("file") as File;
    expect(sent.name).toBe("iris_sklearn.zip");
    expect(sent.size).toBe(file.size);
    expect(fd.get("description")).toBe("from a zip");
    expect(JSON.parse(String(fd.get("tags")))).toEqual({ team: "ml", stage: "dev" });
    expect(fd.get("aliases")).toBe("candidate,staging");
  });

  it("sends only the file when nothing else is given (the package's own description stays)", () => {
    const r = parseUpload({ name: "iris", description: "  ", tags: "", aliases: "" }, zip());
    expect(r.ok).toBe(true);
    if (r.ok) expect([...uploadFormData(r.value).keys()]).toEqual(["file"]);
  });

  it("fills the model into the route", () => {
    expect(uploadPath("/models/{name}/versions", "iris.v2")).toBe("/models/iris.v2/versions");
    expect(uploadPath("/models/{name}/versions", "a b")).toBe("/models/a%20b/versions");
    expect(uploadPath("/models/{name}/packages/{kind}", "iris")).toBeNull();
  });

  it("is posted as multipart without a Content-Type of ours (the browser sets the boundary)", async () => {
    const calls: Call[] = [];
    const c = new ApiClient(async (url, init) => (calls.push({ url, init }), json(201, V3)), { token: () => "ada-token" });
    const fd = uploadFormData({ name: "iris", file: zip(), aliases: [] });
    expect((await c.uploadPackage("/models/iris/versions", fd)).version).toBe("3");
    expect(calls[0].url).toBe("/api/models/iris/versions");
    expect(calls[0].init?.method).toBe("POST");
    expect(calls[0].init?.body).toBe(fd);
    const headers = calls[0].init?.headers as Record<string, string>;
    expect(Object.keys(headers).map((k) => k.toLowerCase())).not.toContain("content-type");
    expect(headers.Authorization).toBe("Bearer ada-token");
  });
});

describe("reading a refusal", () => {
  it("keeps every problem of a 422 and shortens the detail that repeats them", () => {
    const problems = ["zip-slip: '../evil.py' leaves the archive", "no MLmodel and no meta.json"];
    const e = new ApiError(422, `model package refused (2 problems): ${problems.join("; ")}`, "…", { detail: "…", problems });
    expect(e.problems).toEqual(problems);
    expect(describeUploadFailure(e)).toEqual({ message: "model package refused (2 problems)", problems, signIn: false, limit: null });
  });

  it("reads the limit a 413 names", () => {
    const msg = "upload of 7340032 bytes is larger than the limit of 6291456 bytes (MLSTACK_PACKAGE_MAX_UPLOAD_BYTES)";
    expect(limitFromMessage(msg)).toBe(6291456);
    expect(limitFromMessage("HTTP 413 Request Entity Too Large")).toBeNull();
    expect(describeUploadFailure(new ApiError(413, msg, msg, { detail: msg }))).toMatchObject({ message: msg, limit: 6291456 });
  });

  it("sends a 401 to the sign-in form and shows a 403 as the API said it", () => {
    expect(describeUploadFailure(new ApiError(401, "missing bearer token"))).toMatchObject({ signIn: true, message: "Sign in first (missing bearer token)." });
    expect(describeUploadFailure(new ApiError(403, "vic may not create models"))).toMatchObject({ signIn: false, message: "vic may not create models", problems: [] });
  });
});

describe("findUploadRoute", () => {
  const doc = (file: Record<string, unknown>) => ({
    paths: {
      "/models/{name}/versions": {
        post: { summary: "Upload", requestBody: { content: { "multipart/form-data": { schema: { type: "object", properties: { file } } } } } },
      },
    },
  });

  it("takes the size limit from the file field's maxLength, and states none otherwise", () => {
    expect(findUploadRoute(doc({ type: "string", format: "binary" }))).toEqual({ path: "/models/{name}/versions", summary: "Upload", maxBytes: null });
    expect(findUploadRoute(doc({ type: "string", format: "binary", maxLength: 1024 }))?.maxBytes).toBe(1024);
  });
});

// ---- the forms, driven as a user would (jsdom), against a fake API ----

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function choose(input: HTMLInputElement, file: File): void {
  Object.defineProperty(input, "files", { value: [file], configurable: true });
  input.dispatchEvent(new Event("change"));
}

function mountUpload(fetchImpl: (url: string, init?: RequestInit) => Promise<Response>, route: UploadRoute = ROUTE) {
  const calls: Call[] = [];
  const client = new ApiClient(async (url, init) => (calls.push({ url, init }), fetchImpl(url, init)), { token: () => "tok" });
  const uploaded: [string, ModelVersion][] = [];
  const el = uploadForm({ client, route, onUploaded: (name, v) => void uploaded.push([name, v]) });
  document.body.replaceChildren(el);
  const form = el.querySelector<HTMLFormElement>("#upload-form")!;
  const field = (name: string) => form.querySelector<HTMLInputElement>(`[name=${name}]`)!;
  const submit = () => form.dispatchEvent(new Event("submit", { cancelable: true }));
  const note = () => el.querySelector("#upload-msg")!.textContent;
  const problems = () => [...el.querySelectorAll("#upload-problems li")].map((li) => li.textContent);
  const button = form.querySelector<HTMLButtonElement>("button[type=submit]")!;
  return { client, calls, uploaded, el, form, field, submit, note, problems, button };
}

describe("the upload form", () => {
  afterEach(() => document.body.replaceChildren());

  it("has a label for every field and the .zip filter", () => {
    const { form, field } = mountUpload(async () => json(201, V3));
    for (const el of form.querySelectorAll("input, textarea")) expect(el.closest("label")).not.toBeNull();
    expect(field("file").accept).toBe(".zip,application/zip");
    expect(field("name").hasAttribute("data-no-prefill")).toBe(true);
  });

  it("on 201: disabled while uploading with progress text, then 'Registered <name> v<version>' and a refresh", async () => {
    const answer = deferred<Response>();
    const u = mountUpload(() => answer.promise);
    u.field("name").value = "iris";
    u.field("aliases").value = "candidate";
    u.field("description").value = "uploaded";
    choose(u.field("file"), zip("iris_sklearn.zip", 2048));
    u.submit();
    expect(u.button.disabled).toBe(true);
    expect(u.note()).toBe("Uploading iris_sklearn.zip (2.0 KiB) to iris and checking it…");
    u.submit(); // a second click while uploading sends nothing
    expect(u.calls).toHaveLength(1);
    const fd = u.calls[0].init?.body as FormData;
    expect(u.calls[0].url).toBe("/api/models/iris/versions");
    expect((fd.get("file") as File).name).toBe("iris_sklearn.zip");
    expect(fd.get("aliases")).toBe("candidate");
    expect(fd.get("description")).toBe("uploaded");
    answer.resolve(json(201, V3));
    await vi.waitFor(() => expect(u.note()).toBe("Registered iris v3"));
    expect(u.el.querySelector("#upload-msg")!.classList.contains("error")).toBe(false);
    expect(u.button.disabled).toBe(false);
    expect(u.uploaded).toEqual([["iris", V3]]);
    expect(u.problems()).toEqual([]);
  });

  it("on 422: shows the detail and every problem as a list", async () => {
    const problems = ["'../evil.py': path escapes the archive (zip-slip)", "no MLmodel file and no meta.json at the root", "tags: not valid JSON"];
    const u = mountUpload(async () => json(422, { detail: `model package refused (3 problems): ${problems.join("; ")}`, problems }));
    u.field("name").value = "iris";
    choose(u.field("file"), zip("evil.zip"));
    u.submit();
    await vi.waitFor(() => expect(u.note()).toBe("Not uploaded: model package refused (3 problems)"));
    expect(u.problems()).toEqual(problems);
    expect(u.el.querySelector("#upload-problems")!.hasAttribute("hidden")).toBe(false);
    expect(u.el.querySelector("#upload-msg")!.classList.contains("error")).toBe(true);
    expect(u.button.disabled).toBe(false);
    expect(u.uploaded).toEqual([]);
  });

  it("on 413: shows the message, then refuses files over the limit it named without sending them", async () => {
    const msg = "upload larger than the limit of 1024 bytes (MLSTACK_PACKAGE_MAX_UPLOAD_BYTES)";
    const u = mountUpload(async () => json(413, { detail: msg }));
    u.field("name").value = "iris";
    choose(u.field("file"), zip("big.zip", 4096));
    u.submit();
    await vi.waitFor(() => expect(u.note()).toBe(`Not uploaded: ${msg}`));
    expect(u.el.querySelector("#upload-limit")!.textContent).toBe("At most 1.0 KiB.");
    choose(u.field("file"), zip("big.zip", 4096));
    expect(u.form.querySelector(".field-error")?.textContent).toMatch(/at most 1\.0 KiB/);
    u.submit();
    expect(u.calls).toHaveLength(1);
  });

  it("on 403: shows the API's message and stays signed in", async () => {
    const u = mountUpload(async () => json(403, { detail: "vic (viewer) may not create models" }));
    const unauthorized: unknown[] = [];
    u.client.onUnauthorized((e) => unauthorized.push(e));
    u.field("name").value = "iris";
    choose(u.field("file"), zip());
    u.submit();
    await vi.waitFor(() => expect(u.note()).toBe("Not uploaded: vic (viewer) may not create models"));
    expect(unauthorized).toEqual([]);
  });

  it("on 401: hands over to the sign-in flow", async () => {
    const u = mountUpload(async () => json(401, { detail: "invalid or expired token" }));
    const unauthorized: [number, string | null][] = [];
    u.client.onUnauthorized((e, used) => unauthorized.push([e.status, used]));
    u.field("name").value = "iris";
    choose(u.field("file"), zip());
    u.submit();
    await vi.waitFor(() => expect(u.note()).toBe("Not uploaded: Sign in first (invalid or expired token)."));
    expect(unauthorized).toEqual([[401, "tok"]]);
  });

  it("checks the name and the file before sending anything", () => {
    const u = mountUpload(async () => json(201, V3));
    u.field("name").value = "my model";
    choose(u.field("file"), zip("model.tar"));
    u.submit();
    expect(u.calls).toEqual([]);
    const errors = [...u.form.querySelectorAll(".field-error")].map((e) => e.textContent);
    expect(errors).toHaveLength(2);
    expect(u.field("name").getAttribute("aria-invalid")).toBe("true");
    expect(u.field("file").getAttribute("aria-invalid")).toBe("true");
  });

  it("uses a limit stated in /openapi.json", () => {
    const u = mountUpload(async () => json(201, V3), { ...ROUTE, maxBytes: 100 });
    expect(u.el.querySelector("#upload-limit")!.textContent).toBe("At most 100 B.");
    u.field("name").value = "iris";
    choose(u.field("file"), zip("m.zip", 101));
    u.submit();
    expect(u.calls).toEqual([]);
  });
});

describe("save as new version", () => {
  afterEach(() => document.body.replaceChildren());

  function mountCopy(fetchImpl: (url: string, init?: RequestInit) => Promise<Response>) {
    const calls: Call[] = [];
    const client = new ApiClient(async (url, init) => (calls.push({ url, init }), fetchImpl(url, init)));
    const copied: ModelVersion[] = [];
    const el = copyForm({ client, model: "iris", version: mv("2", { description: "the original" }), onCopied: (v) => void copied.push(v) });
    document.body.replaceChildren(el);
    const form = el.querySelector("form")!;
    return {
      calls,
      copied,
      el,
      form,
      field: (name: string) => form.querySelector<HTMLInputElement>(`[name=${name}]`)!,
      submit: () => form.dispatchEvent(new Event("submit", { cancelable: true })),
      note: () => el.querySelector(".form-note")!.textContent,
    };
  }

  it("sends only what was edited and reports the new version", async () => {
    const c = mountCopy(async () => json(201, { version: "5" }));
    expect(c.field("description").value).toBe("the original");
    c.field("aliases").value = "candidate";
    c.submit();
    await vi.waitFor(() => expect(c.note()).toBe("Saved v2 as v5."));
    expect(c.calls[0].url).toBe("/api/models/iris/versions/2/copy");
    expect(c.calls[0].init?.method).toBe("POST");
    expect(JSON.parse(String(c.calls[0].init?.body))).toEqual({ aliases: ["candidate"] });
    expect(c.copied).toEqual([{ version: "5" }]);
  });

  it("sends an edited description, and refuses a reserved alias before sending", () => {
    expect(parseCopy({ description: " new words ", aliases: "" }, "old")).toEqual({ ok: true, value: { description: "new words" } });
    expect(parseCopy({ description: "old", aliases: "" }, "old")).toEqual({ ok: true, value: {} });
    const c = mountCopy(async () => json(201, { version: "5" }));
    c.field("aliases").value = "latest";
    c.submit();
    expect(c.calls).toEqual([]);
    expect(c.form.querySelector(".field-error")?.textContent).toMatch(/reserved/);
  });

  it("shows a 403 or 404 where it happened", async () => {
    const c = mountCopy(async () => json(403, { detail: "vic (viewer) may not create models" }));
    c.submit();
    await vi.waitFor(() => expect(c.note()).toBe("Not saved: vic (viewer) may not create models"));
    expect(c.copied).toEqual([]);
  });
});
