// The retention desk: the form to /predict and /whatif, a customer file scored through /predict/batch, and the answers.
// No framework, no build step. Every value from the service or a file is written with textContent, never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("desk-form"), key = $("api-key"), submit = $("submit"), who = $("customer-id");
  const STORE = "churn-desk-api-key";
  // The API key stays in this tab: the field, and sessionStorage so a reload keeps it. Never a cookie or a URL.
  try { key.value = sessionStorage.getItem(STORE) || ""; } catch (e) { /* storage blocked: the field alone holds it */ }
  key.addEventListener("input", () => {
    try { key.value ? sessionStorage.setItem(STORE, key.value) : sessionStorage.removeItem(STORE); } catch (e) {}
  });

  const NUMBER = /^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;
  const CUSTOMER_ID = /^[\x20-\x7e]{1,128}$/;  // what a header may carry; the service checks the rest
  // a number goes as a JSON number; anything else as typed, so the API names the field and says what is wrong
  const read = (el) => (el.dataset.kind === "number" && NUMBER.test(el.value) ? Number(el.value) : el.value);
  function customer() {
    const c = {};
    for (const el of form.querySelectorAll("[data-feature]")) c[el.dataset.feature] = read(el);
    return c;
  }
  function whatifBody(c) {
    const body = {customer: c};
    for (const el of form.querySelectorAll("[data-param]")) body[el.dataset.param] = read(el);
    const boxes = [...form.querySelectorAll("input[name=offer]")];
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    if (chosen.length !== boxes.length) body.offers = chosen;
    return body;
  }

  async function post(path, body, id) {
    const headers = {"Content-Type": "application/json"};
    if (key.value) headers["X-API-Key"] = key.value;
    if (id) headers["X-Customer-Id"] = id;
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
    if (form.querySelector(`[data-param="${CSS.escape(p)}"]`)) return "p-" + p;
    return {"x-api-key": "api-key", "offers": "offers", "x-customer-id": "customer-id"}[p] || null;
  }
  function place(id, message) {
    const span = $("e-" + id.replace(/^[fp]-/, ""));
    if (!span || span.textContent) return false;  // the first message for a field wins
    span.textContent = message;
    const input = $(id);
    if (input) input.setAttribute("aria-invalid", "true");
    return true;
  }
  function showError(err) {
    const fields = err.fields && err.fields.length ? err.fields : [{field: err.message.split(": ")[0], message: err.message}];
    for (const f of fields) {
      const id = target(f.field);
      if (id) place(id, f.message);
    }
    const banner = $("banner");
    if (!banner.textContent.includes(err.message)) banner.textContent += (banner.textContent ? " " : "") + err.message;
    banner.hidden = false;
  }
  function clearErrors() {
    for (const span of document.querySelectorAll("#desk-form .error, #e-api-key")) span.textContent = "";
    for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    $("banner").textContent = "";
    $("banner").hidden = true;
  }

  const pct = (p) => (100 * p).toFixed(1) + " %";
  const points = (d) => (d < 0 ? "−" : "+") + Math.abs(100 * d).toFixed(1) + " points";
  const money = (x) => (x < 0 ? "−" : "") + "$" + Math.abs(x).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  const signed = (x) => (x >= 0 ? "+" : "") + money(x);
  function item(tag, text, cls) {
    const el = document.createElement(tag);
    el.textContent = text;
    if (cls) el.className = cls;
    return el;
  }

  // a table cell that names its column, for narrow screens where the header is not shown
  function cell(label, text, cls) {
    const td = item("td", text, cls);
    td.dataset.label = label;
    return td;
  }

  let shown = null;  // the last /whatif answer, for re-ranking without a request
  function renderOffers() {
    if (!shown) return;
    const byP = document.querySelector("input[name=rank]:checked").value === "p";
    const offers = [...shown.offers];
    if (byP) offers.sort((a, b) => a.churn_probability - b.churn_probability || (a.id < b.id ? -1 : 1));
    const rows = offers.map((o) => {
      const tr = document.createElement("tr");
      tr.dataset.id = o.id;
      tr.dataset.p = String(o.churn_probability);
      tr.dataset.net = String(o.net_value);
      tr.append(item("td", o.label), cell("Cost", money(o.cost), "num"),
                cell("Churn", `${pct(o.churn_probability)} (${points(o.delta)})`),
                cell("Net value", signed(o.net_value), "num " + (o.net_value > 0 ? "down" : "up")));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr"), td = item("td", "No offer applies to this customer with the offers allowed.");
      td.colSpan = 4;
      tr.append(td);
      rows.push(tr);
    }
    $("offers").tBodies[0].replaceChildren(...rows);
  }
  for (const r of document.querySelectorAll("input[name=rank]")) r.addEventListener("change", renderOffers);

  function render(pred, what) {
    const p = pred.churn_probability;
    $("probability").textContent = pct(p);
    $("probability").dataset.p = String(p);
    $("decision").textContent = pred.churn ? "likely to leave: call" : "likely to stay";
    $("decision").className = pred.churn ? "churn" : "stay";
    $("value").textContent = money(what.value);
    $("model-version").textContent = pred.model_version;
    $("reasons").replaceChildren(...what.reasons.map((r) => item("li", r.text)));
    shown = what;
    renderOffers();
    $("result").hidden = false;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    submit.disabled = true;
    document.body.dataset.state = "busy";
    try {
      const id = who.value.trim();
      if (id && !CUSTOMER_ID.test(id)) {
        const msg = "a customer id is 1 to 128 visible ASCII characters";
        showError({message: "x-customer-id: " + msg, fields: [{field: "x-customer-id", message: msg}]});
        $("result").hidden = true;
        document.body.dataset.state = "error";
        return;
      }
      const c = customer();
      const answers = await Promise.all([post("predict", c, id), post("whatif", whatifBody(c), id)]);
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

  // ---------------------------------------------------------------- a customer file, read here and never uploaded
  const FEATURES = [...form.querySelectorAll("[data-feature]")].map((el) => el.dataset.feature);
  const NUMERIC = new Set(FEATURES.filter((f) => $("f-" + f).tagName === "INPUT"));
  const BATCH = 500, SHOWN = 100, MAX_BYTES = 50 * 1024 * 1024;
  let list = [];  // {id, line, file, c, plan, p}

  // RFC 4180: quoted cells may hold commas, quotes ("") and line breaks. Returns rows of cells, each with its line.
  function parseCSV(text) {
    const rows = [];
    let row = [], cell = "", i = 0, quoted = false, line = 1, start = 1;
    const n = text.length;
    while (i < n) {
      const ch = text[i];
      if (quoted) {
        if (ch === '"') {
          if (text[i + 1] === '"') { cell += '"'; i += 2; continue; }
          quoted = false; i++; continue;
        }
        if (ch === "\n") line++;
        cell += ch; i++; continue;
      }
      if (ch === '"' && cell === "") { quoted = true; i++; continue; }
      if (ch === ",") { row.push(cell); cell = ""; i++; continue; }
      if (ch === "\n" || ch === "\r") {
        row.push(cell); rows.push({cells: row, line: start});
        row = []; cell = "";
        if (ch === "\r" && text[i + 1] === "\n") i++;
        i++; line++; start = line;
        continue;
      }
      cell += ch; i++;
    }
    if (quoted) throw new Error(`line ${start}: a quoted cell is never closed`);
    if (cell !== "" || row.length) { row.push(cell); rows.push({cells: row, line: start}); }
    return rows.filter((r) => r.cells.length > 1 || r.cells[0].trim() !== "");
  }

  // One file → {name, header (lower case), rows}; the kind of file is decided by its columns.
  async function readFile(file) {
    if (file.size > MAX_BYTES) throw new Error(`${file.name}: ${(file.size / 1048576).toFixed(0)} MB is over the page's 50 MB`);
    let rows;
    try { rows = parseCSV((await file.text()).replace(/^\ufeff/, "")); }
    catch (e) { throw new Error(`${file.name}: ${e.message}`); }
    if (!rows.length) throw new Error(`${file.name}: the file is empty`);
    const header = rows[0].cells.map((h) => h.trim().toLowerCase());
    for (const r of rows.slice(1)) {
      if (r.cells.length !== header.length) {
        throw new Error(`${file.name}, line ${r.line}: ${r.cells.length} cells where the header has ${header.length}`);
      }
    }
    return {name: file.name, header, rows: rows.slice(1)};
  }
  const col = (f, name) => f.header.indexOf(name);
  const isExport = (f) => col(f, "customerid") >= 0 && FEATURES.every((x) => col(f, x) >= 0);
  const isPlan = (f) => col(f, "customerid") >= 0 && col(f, "offer_label") >= 0;
  const cleanId = (s) => s.trim().replace(/^'(?=[=+\-@\t\r])/, "");  // churn_campaign writes formula-like ids with a leading '

  // One raw cell → the value the service takes, cleaned as the training data is (data.clean_row)
  function clean(f, v) {
    if (f === "seniorcitizen") return v.trim() === "0" || v.trim() === "1" ? Number(v) : v;
    if (!NUMERIC.has(f)) return v.trim().toLowerCase().replace(/ /g, "_");
    if (f === "totalcharges" && !v.trim()) return 0;
    return NUMBER.test(v) ? Number(v) : v;
  }

  function planOf(files) {
    const exports = files.filter(isExport), plans = files.filter((f) => isPlan(f) && !isExport(f));
    const other = files.find((f) => !isExport(f) && !isPlan(f));
    if (other) {
      const missing = col(other, "customerid") < 0 ? "customerID" : FEATURES.find((x) => col(other, x) < 0);
      throw new Error(`${other.name}: no column ${missing}: choose the customer export (its 21 columns, Churn optional) ` +
                      "or churn_campaign's targets.csv with it");
    }
    if (exports.length !== 1) throw new Error(exports.length ? "choose one customer export at a time" : "choose the customer export too: a target list holds no customer's fields");
    if (plans.length > 1) throw new Error("choose one target list at a time");
    const ex = exports[0], byId = new Map(), out = [];
    const idCol = col(ex, "customerid"), cols = FEATURES.map((x) => col(ex, x)), planCol = col(ex, "offer_label");
    for (const r of ex.rows) {
      const id = cleanId(r.cells[idCol]);
      if (byId.has(id)) throw new Error(`${ex.name}, line ${r.line}: customer ${id} is listed twice (first on line ${byId.get(id).line})`);
      const c = {};
      FEATURES.forEach((x, i) => { c[x] = clean(x, r.cells[cols[i]]); });
      byId.set(id, {id, line: r.line, file: ex.name, c, plan: planCol >= 0 ? r.cells[planCol] : null, p: null});
    }
    if (!plans.length) return [...byId.values()];
    const pl = plans[0], pid = col(pl, "customerid"), label = col(pl, "offer_label");
    for (const r of pl.rows) {
      const id = cleanId(r.cells[pid]), found = byId.get(id);
      if (!found) throw new Error(`${pl.name}, line ${r.line}: customer ${id} is not in ${ex.name}`);
      out.push({...found, plan: r.cells[label]});
    }
    return out;
  }

  function renderList() {
    const q = $("list-filter").value.trim().toLowerCase();
    const match = q ? list.filter((x) => x.id.toLowerCase().includes(q)) : list;
    const rows = match.slice(0, SHOWN).map((x) => {
      const tr = document.createElement("tr");
      tr.dataset.id = x.id;
      if (x.p !== null) tr.dataset.p = String(x.p);
      const open = item("button", "Open", "small");
      open.type = "button";
      open.setAttribute("aria-label", `Open customer ${x.id}`);
      open.addEventListener("click", () => choose(x));
      const last = document.createElement("td");
      last.append(open);
      tr.append(item("td", x.id), cell("Churn", x.p === null ? "…" : pct(x.p), "num"), cell("Planned offer", x.plan || "—"), last);
      return tr;
    });
    $("customers").tBodies[0].replaceChildren(...rows);
    $("list-caption").textContent = match.length > SHOWN
      ? `Showing ${SHOWN} of ${match.length.toLocaleString("en-US")}: type an id to find another.`
      : `${match.length.toLocaleString("en-US")} shown.`;
  }
  $("list-filter").addEventListener("input", renderList);

  function choose(x) {
    for (const f of FEATURES) {
      const el = $("f-" + f);
      el.value = String(x.c[f]);
    }
    who.value = x.id;
    form.requestSubmit();
    form.scrollIntoView({block: "start"});
  }

  $("csv-file").addEventListener("change", async (ev) => {
    const files = [...ev.target.files];
    const t0 = performance.now();
    $("csv-error").textContent = "";
    $("csv-status").textContent = files.length ? "Reading…" : "";
    $("list-box").hidden = true;
    document.body.dataset.list = "busy";
    list = [];
    try {
      if (!files.length) return;
      list = planOf(await Promise.all(files.map(readFile)));
      if (!list.length) throw new Error(`${files[0].name}: no customers in the file`);
      $("list-box").hidden = false;
      renderList();
      for (let i = 0; i < list.length; i += BATCH) {
        const part = list.slice(i, i + BATCH);
        $("csv-status").textContent = `Scoring ${i.toLocaleString("en-US")} of ${list.length.toLocaleString("en-US")} customers…`;
        const r = await post("predict/batch", {customers: part.map((x) => x.c), customer_ids: part.map((x) => x.id)});
        if (!r.ok) {
          const m = /^customers\[(\d+)\]\.?(.*)$/.exec(r.error.message) || /^customer_ids\[(\d+)\](.*)$/.exec(r.error.message);
          const x = m && part[Number(m[1])];
          throw new Error(x ? `${x.file}, line ${x.line}: ${m[2].replace(/^: /, "")}` : r.error.message);
        }
        r.data.predictions.forEach((pr, j) => { part[j].p = pr.churn_probability; });
        renderList();
      }
      const ms = performance.now() - t0;
      document.body.dataset.listMs = String(Math.round(ms));
      $("csv-status").textContent = `${list.length.toLocaleString("en-US")} customers scored in ${(ms / 1000).toFixed(1)} s.`;
      document.body.dataset.list = "ready";
    } catch (e) {
      list = [];
      $("list-box").hidden = true;
      $("csv-status").textContent = "";
      $("csv-error").textContent = e.message;
      document.body.dataset.list = "error";
    }
  });
})();
