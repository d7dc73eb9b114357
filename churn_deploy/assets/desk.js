// The retention desk: the form to /predict, /explain and /whatif, and their answers. No framework, no build step.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("desk-form"), key = $("api-key"), submit = $("submit");
  const STORE = "churn-desk-api-key";
  // The API key stays in this tab: the field, and sessionStorage so a reload keeps it. Never a cookie or a URL.
  try { key.value = sessionStorage.getItem(STORE) || ""; } catch (e) { /* storage blocked: the field alone holds it */ }
  key.addEventListener("input", () => {
    try { key.value ? sessionStorage.setItem(STORE, key.value) : sessionStorage.removeItem(STORE); } catch (e) {}
  });

  const NUMBER = /^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;
  function customer() {
    const c = {};
    // a number goes as a JSON number; anything else as typed, so the API names the field and says what is wrong
    for (const el of form.querySelectorAll("[data-feature]")) {
      c[el.dataset.feature] = el.dataset.kind === "number" && NUMBER.test(el.value) ? Number(el.value) : el.value;
    }
    return c;
  }
  function whatifBody(c) {
    const body = {customer: c, discount_max: Number($("discount-max").value)};
    const boxes = [...form.querySelectorAll("input[name=change]")];
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    if (chosen.length !== boxes.length) body.changes = chosen;
    return body;
  }

  async function post(path, body) {
    const headers = {"Content-Type": "application/json"};
    if (key.value) headers["X-API-Key"] = key.value;
    let r, data = null;
    try {
      r = await fetch(path, {method: "POST", headers, body: JSON.stringify(body), credentials: "omit", cache: "no-store"});
    } catch (e) {
      return {ok: false, error: {message: `/${path}: the service did not answer`, fields: []}};
    }
    try { data = await r.json(); } catch (e) { /* not JSON: reported below */ }
    if (r.ok && data) return {ok: true, data};
    return {ok: false, error: (data && data.error) || {message: `/${path}: HTTP ${r.status}`, fields: []}};
  }

  // An error's field path → the id of the input it belongs to.
  function target(path) {
    const p = path.replace(/^customer\./, "").replace(/\[\d+\]$/, "");
    if (form.querySelector(`[data-feature="${CSS.escape(p)}"]`)) return "f-" + p;
    return {"x-api-key": "api-key", "discount_max": "discount-max", "changes": "changes"}[p] || null;
  }
  function place(id, message) {
    const span = $("e-" + id.replace(/^f-/, ""));
    if (!span || span.textContent) return false;  // the first message for a field wins
    span.textContent = message;
    const input = $(id);
    if (input) input.setAttribute("aria-invalid", "true");
    return true;
  }
  function showError(err) {
    const fields = err.fields && err.fields.length ? err.fields : [{field: err.message.split(": ")[0], message: err.message}];
    let placed = false;
    for (const f of fields) {
      const id = target(f.field);
      if (id) placed = place(id, f.message) || placed;
    }
    const banner = $("banner");
    if (!banner.textContent.includes(err.message)) banner.textContent += (banner.textContent ? " " : "") + err.message;
    banner.hidden = false;
    return placed;
  }
  function clearErrors() {
    for (const span of form.querySelectorAll(".error")) span.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    $("banner").textContent = "";
    $("banner").hidden = true;
  }

  const pct = (p) => (100 * p).toFixed(1) + " %";
  const points = (d) => (d < 0 ? "−" : "+") + Math.abs(100 * d).toFixed(1) + " points";
  function item(tag, text, cls) {
    const el = document.createElement(tag);
    el.textContent = text;
    if (cls) el.className = cls;
    return el;
  }
  function render(pred, expl, what) {
    const p = pred.churn_probability;
    $("probability").textContent = pct(p);
    $("probability").dataset.p = String(p);
    $("decision").textContent = pred.churn ? "likely to churn: call" : "likely to stay";
    $("decision").className = pred.churn ? "churn" : "stay";
    $("model-version").textContent = pred.model_version;
    $("reasons").replaceChildren(...expl.reasons.map((r) => item("li", r)));
    const rows = what.offers.slice(0, 5).map((o) => {
      const tr = document.createElement("tr");
      tr.dataset.change = o.change;
      tr.dataset.p = String(o.churn_probability);
      tr.append(item("td", o.label), item("td", pct(o.churn_probability)), item("td", points(o.delta), o.delta < 0 ? "down" : "up"));
      return tr;
    });
    if (!rows.length) rows.push(item("tr", "No offer is possible for this customer with the offers allowed."));
    $("offers").tBodies[0].replaceChildren(...rows);
    const pair = what.best_pair;
    $("best-pair").textContent = pair ? `Best pair: ${pair.labels.join(" + ")}, ${pct(pair.churn_probability)} (${points(pair.delta)})` : "";
    $("result").hidden = false;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    submit.disabled = true;
    document.body.dataset.state = "busy";
    try {
      const c = customer();
      const answers = await Promise.all([post("predict", c), post("explain", c), post("whatif", whatifBody(c))]);
      const failed = answers.filter((a) => !a.ok);
      if (failed.length) {
        failed.forEach((a) => showError(a.error));
        $("result").hidden = true;
        document.body.dataset.state = "error";
      } else {
        render(...answers.map((a) => a.data));
        document.body.dataset.state = "done";
      }
      $("hint").hidden = true;
    } finally {
      submit.disabled = false;
      document.body.dataset.runs = String(Number(document.body.dataset.runs) + 1);
    }
  });
})();
