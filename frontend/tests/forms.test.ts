import { describe, expect, it } from "vitest";
import { classLabels, className, featureFields, formatTags, HYPERPARAMETER_DEFAULTS, parseDeployment, parseHyperparameters, parsePrediction, parseTags, parseTarget } from "../src/lib/forms";

describe("parseHyperparameters", () => {
  it("uses the API defaults for empty fields", () => {
    expect(parseHyperparameters({})).toEqual({ ok: true, value: HYPERPARAMETER_DEFAULTS });
  });

  it("parses a full form", () => {
    const r = parseHyperparameters({ n_estimators: "25", max_depth: "5", min_samples_split: "4", min_samples_leaf: "2", max_features: "0.5", random_state: "7", test_size: "0.3" });
    expect(r).toEqual({ ok: true, value: { n_estimators: 25, max_depth: 5, min_samples_split: 4, min_samples_leaf: 2, max_features: 0.5, random_state: 7, test_size: 0.3 } });
  });

  it("maps 'all' to null max_features", () => {
    const r = parseHyperparameters({ max_features: "all" });
    expect(r.ok && r.value.max_features).toBeNull();
  });

  it("reports every out-of-bounds field", () => {
    const r = parseHyperparameters({ n_estimators: "2001", max_depth: "0", min_samples_split: "1", test_size: "0.9", max_features: "2", random_state: "1.5" });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(Object.keys(r.errors).sort()).toEqual(["max_depth", "max_features", "min_samples_split", "n_estimators", "random_state", "test_size"]);
      expect(r.errors.n_estimators).toBe("Must be between 1 and 2000.");
      expect(r.errors.random_state).toBe("Must be a whole number.");
    }
  });
});

describe("parsePrediction", () => {
  it("builds one row and an optional version", () => {
    expect(parsePrediction({ sepal_length: "5.1", sepal_width: "3.5", petal_length: "1.4", petal_width: "0.2" })).toEqual({ ok: true, value: { input_data: [5.1, 3.5, 1.4, 0.2] } });
    const r = parsePrediction({ sepal_length: "1", sepal_width: "2", petal_length: "3", petal_width: "4", model_version: " 3 " });
    expect(r.ok && r.value.model_version).toBe("3");
  });

  it("rejects missing values and a non-numeric version", () => {
    const r = parsePrediction({ sepal_length: "", sepal_width: "x", petal_length: "3", petal_width: "4", model_version: "champion" });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(Object.keys(r.errors).sort()).toEqual(["model_version", "sepal_length", "sepal_width"]);
  });
});

describe("className", () => {
  it("names iris classes and passes other labels through", () => {
    expect(className(0)).toBe("setosa");
    expect(className("2")).toBe("virginica");
    expect(className(7)).toBe("7");
    expect(className("Iris-setosa")).toBe("Iris-setosa");
  });
});

describe("tags", () => {
  it("round-trips and hides mlflow's own tags", () => {
    expect(parseTags("team = ml, stage=dev\nowner=a=b")).toEqual({ team: "ml", stage: "dev", owner: "a=b" });
    const tags = { team: "ml", "mlflow.source": "x", "mlstack.task": "classification" };
    expect(formatTags(tags)).toBe("team=ml");
    expect(formatTags(tags, true)).toBe("mlflow.source=x, mlstack.task=classification");
    expect(() => parseTags("novalue")).toThrow(/key=value/);
  });
});

describe("parseDeployment", () => {
  it("builds a pod spec with an alias", () => {
    expect(parseDeployment({ name: "iris", model: "iris_model", ref: "alias", ref_value: "champion", runtime: "pod", server: "onnx", replicas: "2" })).toEqual({
      ok: true,
      value: { name: "iris", spec: { model: { name: "iris_model", alias: "champion" }, runtime: "pod", server: "onnx", replicas: 2 } },
    });
  });

  it("builds a vm spec with a version, a namespace and spec.vm, without a server", () => {
    const r = parseDeployment({ name: "iris-vm", namespace: "models", model: "iris_model", ref: "version", ref_value: "3", runtime: "vm", server: "onnx", vm_image: "quay.io/containerdisks/debian:12", vm_cores: "2", vm_memory: "4Gi" });
    expect(r).toEqual({
      ok: true,
      value: { name: "iris-vm", namespace: "models", spec: { model: { name: "iris_model", version: "3" }, runtime: "vm", replicas: 1, vm: { image: "quay.io/containerdisks/debian:12", cores: 2, memory: "4Gi" } } },
    });
  });

  it("asks for the VM's image (the API refuses runtime: vm without spec.vm)", () => {
    const r = parseDeployment({ name: "iris-vm", model: "iris_model", ref: "alias", ref_value: "champion", runtime: "vm", vm_memory: "lots" });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(Object.keys(r.errors).sort()).toEqual(["vm_image", "vm_memory"]);
  });

  it("rejects names Kubernetes would reject", () => {
    const r = parseDeployment({ name: "Iris_1", model: "", ref: "version", ref_value: "v3", replicas: "-1" });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(Object.keys(r.errors).sort()).toEqual(["model", "name", "ref_value", "replicas"]);
  });

  it("refuses what the API refuses, by the API's own rules (patterns.ts)", () => {
    const base = { model: "iris_model", ref: "alias", ref_value: "champion", runtime: "pod", server: "onnx" };
    const errors = (raw: Record<string, string>) => {
      const r = parseDeployment({ ...base, name: "iris", ...raw });
      return r.ok ? [] : Object.keys(r.errors).sort();
    };
    expect(errors({})).toEqual([]);
    expect(errors({ name: "x".repeat(42) })).toEqual([]);
    expect(errors({ name: "x".repeat(43) })).toEqual(["name"]); // room for "-canary" and "-serve-svc"
    expect(errors({ name: "1iris" })).toEqual(["name"]); // a DNS-1035 label starts with a letter
    expect(errors({ namespace: "x".repeat(64) })).toEqual(["namespace"]);
    expect(errors({ ref_value: "_champion" })).toEqual(["ref_value"]);
    expect(errors({ ref_value: "a".repeat(64) })).toEqual(["ref_value"]);
    expect(errors({ ref: "version", ref_value: "0" })).toEqual(["ref_value"]);
    expect(errors({ model: "my model" })).toEqual(["model"]);
  });
});

describe("showFieldErrors", () => {
  it("marks invalid fields, links their messages and focuses the first, then clears", async () => {
    const { h, showFieldErrors } = await import("../src/lib/dom");
    const form = h(
      "form",
      { id: "f" },
      h("label", null, "A", h("input", { name: "a" })),
      h("label", null, "B", h("input", { name: "b" })),
    );
    document.body.append(form);
    showFieldErrors(form, { b: "Too big.", a: "Required." });
    const a = form.querySelector<HTMLInputElement>("[name=a]")!;
    expect(a.getAttribute("aria-invalid")).toBe("true");
    expect(document.getElementById(a.getAttribute("aria-describedby")!)?.textContent).toBe("Required.");
    expect(document.activeElement?.getAttribute("name")).toBe("b");
    showFieldErrors(form, {});
    expect(form.querySelectorAll("[aria-invalid], .field-error")).toHaveLength(0);
  });

  it("never turns API text into markup", async () => {
    const { h } = await import("../src/lib/dom");
    const el = h("p", null, "<img src=x onerror=alert(1)>");
    expect(el.querySelector("img")).toBeNull();
    expect(el.textContent).toBe("<img src=x onerror=alert(1)>");
  });
});

describe("predict form for any model", () => {
  const iris = { tags: { "mlstack.features": "sepal_length,sepal_width,petal_length,petal_width" } };

  it("builds its fields from the version's recorded features (iris labels where they match)", () => {
    const fields = featureFields(iris);
    expect(fields?.map((f) => f.label)).toEqual(["Sepal length (cm)", "Sepal width (cm)", "Petal length (cm)", "Petal width (cm)"]);
    expect(classLabels(fields)).toEqual(["setosa", "versicolor", "virginica"]);
    const churn = featureFields({ tags: { "mlstack.features": "tenure, monthly_charges" } });
    expect(churn).toEqual([{ name: "tenure", label: "tenure", example: "" }, { name: "monthly_charges", label: "monthly_charges", example: "" }]);
    expect(classLabels(churn)).toEqual([]);
    expect(featureFields({ tags: {} })).toBeNull();
    expect(featureFields(null)).toBeNull();
  });

  it("sends the chosen model and version or alias, or the deployment", () => {
    const churn = featureFields({ tags: { "mlstack.features": "tenure,monthly_charges" } });
    const r = parsePrediction({ tenure: "12", monthly_charges: "70.5" }, churn, parseTarget("model:churn_model", "@champion"));
    expect(r).toEqual({ ok: true, value: { input_data: [12, 70.5], model: "churn_model", alias: "champion" } });
    expect(parseTarget("model:churn_model", "3")).toEqual({ model: "churn_model", version: "3" });
    expect(parseTarget("deployment:models/iris", "3")).toEqual({ deployment: "models/iris" });
    expect(parseTarget("", "")).toBeNull();
    const bad = parsePrediction({ tenure: "", monthly_charges: "x" }, churn, null);
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(Object.keys(bad.errors).sort()).toEqual(["monthly_charges", "tenure"]);
  });

  it("takes comma-separated values for a model without recorded features", () => {
    expect(parsePrediction({ values: "1, 2.5,3" }, null, { model: "m" })).toEqual({ ok: true, value: { input_data: [1, 2.5, 3], model: "m" } });
    const r = parsePrediction({ values: "1,a" }, null);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.values).toMatch(/Numbers only/);
  });
});
