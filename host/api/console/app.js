// Tollgate's web console: one page, no framework, no build step. Every figure comes from the
// gateway's admin and account APIs, called with the session cookie and, on every change, the
// session's CSRF token. Text from the API is only ever set as text (never parsed as HTML).
"use strict";

const state = { user: null, csrf: "" };

// ---- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// rowAttrs(row) gives each row's attributes (e.g. a data- name a test or a script can find).
function table(columns, rows, empty, rowAttrs) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing yet.");
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", {}, title)))),
    h("tbody", {}, rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {}, columns.map(([, cell]) => h("td", {}, cell(r)))))));
}

function form(fields, submitText, onsubmit) {
  const message = h("p", { class: "error", role: "alert" });
  const el = h("form", { class: "row" }, fields, h("button", { type: "submit" }, submitText), message);
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    message.textContent = "";
    message.className = "error";
    try {
      const done = await onsubmit(Object.fromEntries(new FormData(el).entries()), el);
      if (done) { message.className = "ok"; message.textContent = done; }
    } catch (e) {
      message.textContent = e.message;
    }
  });
  return el;
}

// Every form control has a <label for> naming it (screen readers and tests find it by it).
let controls = 0;
function labelled(label, control, wide) {
  control.id = control.id || `control-${++controls}`;
  return h("div", { class: wide ? "field wide" : "field" }, h("label", { for: control.id }, label), control);
}
const field = (label, name, attrs) => labelled(label, h("input", { name, ...(attrs || {}) }));
// options: [value, text] pairs; the one equal to `value` is selected.
const choice = (name, options, value) =>
  h("select", { name }, options.map(([v, text]) => h("option", { value: v, selected: v === (value || "") }, text)));
// Query text of the filled fields only.
const query = (fields) => new URLSearchParams(Object.entries(fields).filter(([, v]) => v !== "" && v != null)).toString();
const when = (unix) => (unix ? new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) : "");
const today = () => new Date().toISOString().slice(0, 10);
const monthStart = () => new Date().toISOString().slice(0, 8) + "01";

// ---- the API -----------------------------------------------------------------------------

async function api(method, path, body, raw) {
  const headers = {};
  if (method !== "GET") headers["x-csrf-token"] = state.csrf;
  if (body !== undefined && !raw) headers["content-type"] = "application/json";
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    const message = (data && data.error && data.error.message) || `${r.status} ${r.statusText}`;
    if (r.status === 401 && path !== "/console/session") { signedOut(); }
    throw new Error(message);
  }
  return data;
}

// ---- pages -------------------------------------------------------------------------------

function barChart(title, points) {
  // points: [{label, value}] drawn as bars, labelled at both ends.
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 160");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const max = Math.max(...points.map((p) => p.value), 0) || 1;
  const w = 600 / Math.max(points.length, 1);
  points.forEach((p, i) => {
    const bar = document.createElementNS(ns, "rect");
    const height = Math.round((p.value / max) * 130);
    bar.setAttribute("x", String(i * w + 1));
    bar.setAttribute("y", String(140 - height));
    bar.setAttribute("width", String(Math.max(w - 2, 1)));
    bar.setAttribute("height", String(height));
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${p.label}: ${p.value}`;
    bar.append(tip);
    svg.append(bar);
  });
  for (const [x, anchor, p] of [[0, "start", points[0]], [600, "end", points[points.length - 1]]]) {
    if (!p) continue;
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", String(x));
    t.setAttribute("y", "155");
    t.setAttribute("text-anchor", anchor);
    t.textContent = p.label;
    svg.append(t);
  }
  return h("div", { class: "card" }, h("h2", {}, title), points.length ? svg : h("p", {}, "No calls in this period."));
}

const pages = {
  admin: {
    overview: async () => {
      const [day, month, usage] = await Promise.all([
        api("GET", `/admin/stats?from=${today()}`),
        api("GET", `/admin/stats?from=${monthStart()}`),
        api("GET", `/admin/reports/usage?period=day&from=${monthStart()}`),
      ]);
      const figures = (label, s) => h("div", { class: "figure" }, h("span", {}, label),
        h("b", { "data-figure": label }, s.calls), `calls · ${s.revenue} spent · ${s.errors} errors`);
      return [
        h("h1", {}, "Overview"),
        h("div", { class: "figures" }, figures("Today", day), figures("This month", month)),
        barChart("Calls per day, this month", usage.data.map((d) => ({ label: d.period, value: d.calls }))),
        barChart("Spend per day, this month", usage.data.map((d) => ({ label: d.period, value: Number(d.spent) }))),
        h("div", { class: "card" }, h("h2", {}, "Top users this month"),
          table([["User", (u) => u.name], ["Calls", (u) => u.calls], ["Spent", (u) => u.spent]], month.top_users)),
        h("div", { class: "card" }, h("h2", {}, "Models this month"),
          table([["Model", (m) => m.model], ["Calls", (m) => m.calls], ["Spent", (m) => m.spent]], month.models)),
      ];
    },
    channels: async () => {
      const { channels } = await api("GET", "/admin/channels");
      const select = choice("channel", channels.map((c) => [c.name, c.name]));
      return [
        h("h1", {}, "Channels and keys"),
        h("div", { class: "card" },
          h("button", { type: "button", class: "plain", onclick: async (ev) => {
            const r = await api("POST", "/admin/channels/reload");
            ev.target.textContent = `Reloaded (${(r.channels || []).length || "ok"})`;
          } }, "Reload channels")),
        channels.map(channelCard),
        h("div", { class: "card" }, h("h2", {}, "Import keys"),
          h("p", {}, "One key per line: key[,weight[,priority]], or an exported file's JSON."),
          form([labelled("Channel", select), labelled("Keys", h("textarea", { name: "keys", required: true }), true)],
            "Import", async (v) => {
              const r = await api("POST", `/admin/channels/${encodeURIComponent(v.channel)}/keys`, v.keys, true);
              setTimeout(() => show("channels"), 1500);
              const refused = r.invalid.length ? ` Refused ${r.invalid.length}: ${r.invalid.join("; ")}.` : "";
              return `Imported ${r.added} new, ${r.updated} already stored (updated), ${r.repeated} repeated in the text.${refused}`;
            })),
      ];
    },
    users: async () => {
      const { data } = await api("GET", "/admin/reports/users");
      return [
        h("h1", {}, "Users"),
        h("div", { class: "card" }, h("h2", {}, "Create a user"),
          form([field("Name", "name", { required: true }), field("Password", "password", { type: "password" }),
                field("Balance", "balance", { value: "0" }), field("Group", "group", { value: "default" })],
            "Create", async (v) => { await api("POST", "/admin/users", v); show("users"); })),
        h("div", { class: "card" }, h("h2", {}, "Create a consumer key"),
          form([field("Key name", "name", { required: true }), field("User", "user", { required: true }),
                field("Spending limit", "limit", { placeholder: "none" })],
            "Create key", async (v) => {
              if (!v.limit) delete v.limit;
              const r = await api("POST", "/admin/keys", v);
              return `New key (shown once): ${r.key}`;
            })),
        h("div", { class: "card" }, table([
          ["Id", (u) => u.user_id], ["Name", (u) => u.name], ["Group", (u) => u.group],
          ["Balance", (u) => h("span", { "data-balance": u.name }, u.balance)], ["Calls", (u) => u.calls], ["Spent", (u) => u.spent],
          ["Top up", (u) => form([h("input", { name: "amount", placeholder: "amount", "aria-label": `top up ${u.name}`, size: 6 })],
            "Add", async (v) => { await api("POST", `/admin/users/${encodeURIComponent(u.name)}/topup`, v); show("users"); })],
          ["", (u) => h("span", {},
            h("button", { type: "button", class: "plain", onclick: () => api("POST", `/admin/users/${encodeURIComponent(u.name)}/disable`).then(() => show("users")) }, "Disable"),
            " ",
            h("button", { type: "button", class: "plain", onclick: () => api("POST", `/admin/users/${encodeURIComponent(u.name)}/enable`).then(() => show("users")) }, "Enable"))],
        ], data)),
      ];
    },
    pricing: async () => {
      const text = await api("GET", "/admin/pricing");
      const area = h("textarea", { name: "toml", rows: 20 });
      area.value = typeof text === "string" ? text : JSON.stringify(text, null, 2);
      return [h("h1", {}, "Pricing"), h("div", { class: "card" },
        form([labelled("Price table (TOML)", area, true)], "Save", async (v) => {
          await api("PUT", "/admin/pricing", v.toml, true);
          return "Saved: the new prices apply from the next call.";
        }))];
    },
    plugins: async () => {
      const { plugins } = await api("GET", "/admin/plugins");
      return [h("h1", {}, "Plugins"), h("div", { class: "card" },
        h("button", { type: "button", class: "plain", onclick: async () => { await api("POST", "/admin/plugins/rescan"); show("plugins"); } }, "Rescan the folder"),
        table([["File", (p) => p.file], ["Name", (p) => p.name || ""], ["Version", (p) => p.version || ""],
               ["Status", (p) => p.status], ["SHA-256", (p) => (p.sha256 || "").slice(0, 12)], ["Error", (p) => p.last_error || ""]], plugins))];
    },
    tasks: async () => taskPage(),
    logs: async () => logPage("/admin/logs", true),
    health: async () => {
      const health = await api("GET", "/health");
      return [h("h1", {}, "Health"), h("div", { class: "figures" },
        h("div", { class: "figure" }, h("span", {}, "Serving"), h("b", { "data-figure": "Ready" }, health.ready ? "ready" : "not ready")),
        h("div", { class: "figure" }, h("span", {}, "Plugins loaded"), h("b", {}, health.plugins))),
        h("div", { class: "card" }, h("h2", {}, "Channels that cannot serve"),
          table([["Channel", (c) => c.channel], ["Why", (c) => c.reason]], health.channels_not_ready, "Every channel can serve.")),
        h("div", { class: "card" }, h("h2", {}, "Plugin files that failed to load"),
          table([["File", (p) => p.file], ["Error", (p) => p.error || ""]], health.plugins_failed, "None."))];
    },
  },
  user: {
    account: async () => {
      const [info, days, models] = await Promise.all([
        api("GET", "/v1/user/info"),
        api("GET", `/v1/user/usage?period=day&from=${monthStart()}`),
        api("GET", `/v1/user/usage?period=month&by=model&from=${monthStart()}`),
      ]);
      const figure = (label, value) => h("div", { class: "figure" }, h("span", {}, label), h("b", { "data-figure": label }, value ?? ""));
      return [h("h1", {}, "Account"), h("div", { class: "figures" },
        figure("Balance", info.balance), figure("Calls", info.calls ?? info.usage?.calls), figure("Spent", info.spent ?? info.usage?.spent)),
        barChart("My calls per day, this month", days.data.map((d) => ({ label: d.period, value: d.calls }))),
        barChart("My spend per day, this month", days.data.map((d) => ({ label: d.period, value: Number(d.spent) }))),
        h("div", { class: "card" }, h("h2", {}, "By model, this month"), table([
          ["Model", (m) => m.model || "(no model)"], ["Calls", (m) => m.calls], ["Input tokens", (m) => m.input_tokens],
          ["Output tokens", (m) => m.output_tokens], ["Characters", (m) => m.characters], ["Spent", (m) => m.spent],
        ], models.data, "No calls this month."))];
    },
    keys: async () => {
      const { data } = await api("GET", "/v1/user/keys");
      return [h("h1", {}, "My keys"),
        h("div", { class: "card" }, form([field("Name", "name", { required: true })], "Create key", async (v) => {
          const r = await api("POST", "/v1/user/keys", v);
          sessionStorage.setItem("playground-key", r.key);
          return `New key (shown once; the playground uses it in this tab): ${r.key}`;
        })),
        h("div", { class: "card" }, table([["Id", (k) => k.id], ["Name", (k) => k.name], ["Key", (k) => k.key || k.prefix || ""],
          ["State", (k) => (k.disabled ? "revoked" : "active")], ["Created", (k) => when(k.created_at)],
          ["", (k) => (k.disabled ? "" : h("button", { type: "button", class: "plain", onclick: async () => { await api("DELETE", `/v1/user/keys/${k.id}`); show("keys"); } }, "Revoke"))]], data, "No keys yet."))];
    },
    logs: async () => logPage("/v1/user/logs", false),
    playground: async () => playground(),
  },
};

const keyStates = {
  healthy: "healthy", cooling_down: "cooling down", disabled: "disabled (refused by the vendor)",
  disabled_by_operator: "disabled by the operator",
};

// One channel's card: its keys (masked) with state, weight, priority, balance and last error;
// disable, enable and remove a key; read the balances now; download the stored keys. After a
// change the card reads its channel again and says what happened.
function channelCard(c) {
  const card = h("div", { class: "card", "data-channel": c.name });
  const path = `/admin/channels/${encodeURIComponent(c.name)}/keys`;
  const render = (channel, message, ok) => {
    // A button showing `text`, named `label` for assistive technology (each key's are distinct).
    const act = (text, label, run) => h("button", { type: "button", class: "plain", "aria-label": label, onclick: async () => {
      try { await redraw(await run(), true); } catch (e) { await redraw(e.message, false); }
    } }, text);
    card.replaceChildren(
      h("h2", {}, `${channel.name} · ${channel.plugin} · ${channel.strategy}`),
      h("p", {}, `Models: ${channel.models.join(", ")}`),
      h("div", { class: "row" },
        act("Refresh balances", `Refresh balances of ${channel.name}`, async () => {
          const r = await api("POST", `${path}/balances/refresh`);
          const failed = r.keys.filter((k) => k.error).map((k) => `${k.key}: ${k.error}`);
          return `Read ${r.keys.length - failed.length} of ${r.keys.length} balances.${failed.length ? ` Not read: ${failed.join("; ")}` : ""}`;
        }),
        act("Export keys", `Export stored keys of ${channel.name}`, async () => {
          const { keys } = await api("GET", `${path}/export`);
          const name = `${channel.name}-keys.json`;
          const url = URL.createObjectURL(new Blob([`${JSON.stringify(keys, null, 2)}\n`], { type: "application/json" }));
          const link = h("a", { href: url, download: name, hidden: true });
          document.body.append(link);
          link.click();
          link.remove();
          setTimeout(() => URL.revokeObjectURL(url), 60000);
          return `Exported ${keys.length} stored keys to ${name}: they are in clear, keep the file safe (keys of the configuration file are not in it).`;
        })),
      h("p", { class: ok ? "ok" : "error", role: "status" }, message || ""),
      table([
        ["Key", (k) => k.key],
        ["State", (k) => h("span", { class: `state-${k.state}`, "data-state": k.state }, keyStates[k.state] || k.state)],
        ["Weight", (k) => k.weight], ["Priority", (k) => k.priority], ["Balance", (k) => k.balance ?? ""],
        ["Last error", (k) => (k.last_error ? `${k.last_error.message} (${when(k.last_error.at)})` : "")],
        ["", (k) => h("span", {},
          k.disabled_by_operator
            ? act("Enable", `Enable ${k.key} ${k.fingerprint.slice(0, 8)}`, async () => { await api("POST", `${path}/${k.fingerprint}/enable`); return `Enabled ${k.key}.`; })
            : act("Disable", `Disable ${k.key} ${k.fingerprint.slice(0, 8)}`, async () => { await api("POST", `${path}/${k.fingerprint}/disable`); return `Disabled ${k.key}: no call uses it until it is enabled.`; }),
          " ",
          k.stored_id
            ? act("Remove", `Remove ${k.key} ${k.fingerprint.slice(0, 8)}`, async () => { await api("DELETE", `${path}/${k.stored_id}`); return `Removed ${k.key}.`; })
            : h("span", { class: "muted" }, "from the configuration file"))],
      ], channel.keys, "No keys.", (k) => ({ "data-key": k.fingerprint })));
  };
  const redraw = async (message, ok) => {
    const { channels } = await api("GET", "/admin/channels");
    render(channels.find((x) => x.name === c.name) || c, message, ok);
  };
  render(c);
  return card;
}

const taskStatuses = ["queued", "in_progress", "succeeded", "failed", "expired", "cancelled"];
const openTask = (t) => ["queued", "in_progress"].includes(t.status);

// Every user's tasks, filtered by status, user and model (the filter stays while the console
// is open); a task's detail (its fields, outputs, error, events, ledger and callback) opens
// below the filter; an unfinished task can be cancelled.
const taskFilter = { status: "", user_id: "", model: "" };
async function taskPage() {
  const [users, { channels }] = await Promise.all([api("GET", "/admin/reports/users"), api("GET", "/admin/channels")]);
  const models = [...new Set(channels.flatMap((c) => c.models))].sort();
  const list = h("div", { class: "card", "aria-live": "polite" });
  const detail = h("div", {});
  const load = async () => {
    const { tasks } = await api("GET", `/admin/tasks?${query({ ...taskFilter, limit: 100 })}`);
    list.replaceChildren(h("h2", {}, `${tasks.length} task${tasks.length === 1 ? "" : "s"}`), table([
      ["Id", (t) => t.id], ["User", (t) => t.user_id], ["Model", (t) => t.model || ""], ["Status", (t) => t.status],
      ["Progress", (t) => (t.progress ?? "")], ["Held", (t) => t.held], ["Charge", (t) => t.charge ?? ""],
      ["Created", (t) => when(t.created_at)],
      ["", (t) => h("span", {},
        h("button", { type: "button", class: "plain", "aria-label": `Inspect ${t.id}`, onclick: () => inspect(t.id).catch(failed) }, "Inspect"),
        " ",
        openTask(t) ? h("button", { type: "button", class: "plain", "aria-label": `Cancel ${t.id}`, onclick: () =>
          api("POST", `/admin/tasks/${encodeURIComponent(t.id)}/cancel`).then(load).then(() => inspect(t.id)).catch(failed),
        }, "Cancel") : "")],
    ], tasks, "No tasks match.", (t) => ({ "data-task": t.id })));
  };
  const failed = (e) => detail.replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
  const inspect = async (id) => {
    const t = await api("GET", `/admin/tasks/${encodeURIComponent(id)}`);
    const facts = [["Status", t.status], ["Progress", t.progress], ["Message", t.message], ["Error", t.error],
      ["Model", t.model], ["User", t.user_id], ["Consumer key", t.key_id], ["Channel", t.channel],
      ["Plugin", `${t.plugin} ${t.plugin_version}`], ["Operation", t.op], ["Polls", t.polls], ["Held", t.held],
      ["Charge", t.charge], ["Request id", t.request_id], ["Created", when(t.created_at)], ["Updated", when(t.updated_at)],
      ["Expires", when(t.expires_at)], ["Callback", t.callback.url ? `${t.callback.url} (${t.callback.state}, ${t.callback.attempts} attempts)` : ""]];
    detail.replaceChildren(h("div", { class: "card", "data-task-detail": t.id },
      h("h2", {}, `Task ${t.id}`),
      h("dl", { class: "facts" }, facts.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) =>
        [h("dt", {}, k), h("dd", { "data-fact": k }, String(v))])),
      h("h3", {}, "Outputs"),
      table([["#", (f) => f.index], ["Type", (f) => f.content_type || ""], ["Bytes", (f) => f.size ?? ""],
             ["SHA-256", (f) => (f.sha256 || "").slice(0, 12)], ["Source", (f) => f.source_url || ""]], t.files || [], "No archived outputs."),
      h("h3", {}, "Events"),
      table([["Time", (e) => when(e.at)], ["Status", (e) => e.status], ["Progress", (e) => e.progress ?? ""]],
            t.events || [], "No events kept (they are kept for the progress socket's replay window)."),
      h("h3", {}, "Ledger"),
      table([["Entry", (l) => l.entry_id], ["Amount", (l) => l.amount], ["Time", (l) => when(l.created_at)]], t.ledger || [], "No entries.")));
  };
  await load();
  return [h("h1", {}, "Tasks"),
    h("div", { class: "card" }, form([
      labelled("Status", choice("status", [["", "any"], ...taskStatuses.map((x) => [x, x])], taskFilter.status)),
      labelled("User", choice("user_id", [["", "anyone"], ...users.data.map((u) => [String(u.user_id), u.name])], taskFilter.user_id)),
      labelled("Model", choice("model", [["", "any"], ...models.map((m) => [m, m])], taskFilter.model)),
    ], "Filter", async (v) => { Object.assign(taskFilter, v); await load(); detail.replaceChildren(); })),
    detail, list];
}

// The request log, newest first, a page at a time ("Older" reads the next). Operators filter
// by user, consumer key, channel, model and status; consumers by model and status (their own
// calls only: the API decides whose).
async function logPage(base, operator) {
  const rows = h("div", { class: "card" });
  let before = null;
  const filters = {};
  const [users, keys, channels] = operator
    ? await Promise.all([api("GET", "/admin/reports/users"), api("GET", "/admin/reports/keys"), api("GET", "/admin/channels")])
    : [];
  const load = async (reset) => {
    if (reset) { before = null; rows.replaceChildren(); }
    const q = query({ ...filters, limit: "50", before_id: before });
    const r = await api("GET", `${base}?${q}`);
    before = r.next_before_id;
    rows.append(table([
      ["Time", (c) => when(c.created_at)], ["Model", (c) => c.model || ""], ["Op", (c) => c.op],
      ...(operator ? [["Channel", (c) => c.channel || ""], ["Key", (c) => c.key_id ?? ""]] : []),
      ["Status", (c) => c.status], ["Error", (c) => c.error || ""],
      ["Units", (c) => Object.entries(c.units || {}).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["Charge", (c) => h("span", { "data-charge": c.request_id }, c.charge)], ["Latency", (c) => `${Math.round(c.latency_us / 1000)} ms`],
    ], r.data, reset ? "No calls match." : "No older calls.", (c) => ({ "data-call": c.id })));
    more.hidden = !before;
  };
  const more = h("button", { type: "button", class: "plain", onclick: () => load(false) }, "Older");
  await load(true);
  const statuses = [["", "any"], ["errors", "errors only"], ["2", "2xx"], ["4", "4xx"], ["5", "5xx"]];
  return [h("h1", {}, "Request log"),
    h("div", { class: "card" }, form([
      ...(operator ? [
        labelled("User", choice("user_id", [["", "anyone"], ...users.data.map((u) => [String(u.user_id), u.name])])),
        labelled("Consumer key", choice("key_id", [["", "any"], ...keys.data.map((k) => [String(k.key_id), `${k.name} (${k.user})`])])),
        labelled("Channel", choice("channel", [["", "any"], ...channels.channels.map((c) => [c.name, c.name])])),
      ] : []),
      field("Model", "model"),
      labelled("Status", choice("status", statuses)),
    ], "Filter", async (v) => {
      for (const k of Object.keys(filters)) delete filters[k];
      Object.assign(filters, v);
      await load(true);
    })), rows, more];
}

// The playground: chat (streamed), speech (played), image (shown) and video (a progress bar
// from the task's event stream, then the archived video playing), each called with one of
// the consumer's keys, billed and logged like any other call.
function playground() {
  const key = sessionStorage.getItem("playground-key") || "";
  const keyField = h("input", { name: "key", value: key, required: true, autocomplete: "off", "aria-label": "API key" });
  keyField.addEventListener("change", () => sessionStorage.setItem("playground-key", keyField.value));
  const call = async (path, body) => {
    const r = await fetch(path, {
      method: "POST",
      headers: { authorization: `Bearer ${keyField.value}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      const e = await r.json().catch(() => null);
      throw new Error((e && e.error && e.error.message) || `${r.status}`);
    }
    return r;
  };
  const output = h("div", { class: "output" });
  const kinds = {
    Chat: () => form([field("Model", "model", { required: true }), labelled("Prompt", h("textarea", { name: "prompt", required: true, rows: 4 }), true)],
      "Send", async (v) => {
        const answer = h("pre", { class: "answer", "aria-live": "polite" });
        const usage = h("p", { class: "muted" });
        output.replaceChildren(answer, usage);
        const r = await call("/v1/chat/completions", { model: v.model, stream: true, stream_options: { include_usage: true },
                                                        messages: [{ role: "user", content: v.prompt }] });
        await readEvents(r, (chunk) => {
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) answer.textContent += delta.content;
          if (chunk.usage) usage.textContent = `${chunk.usage.prompt_tokens} input + ${chunk.usage.completion_tokens} output tokens`;
        });
        return "Done.";
      }),
    Speech: () => form([field("Model", "model", { required: true }), field("Voice", "voice", { value: "alloy" }),
                        labelled("Text", h("textarea", { name: "input", required: true, rows: 3 }), true)],
      "Speak", async (v) => {
        const r = await call("/v1/audio/speech", { model: v.model, voice: v.voice, input: v.input });
        const audio = h("audio", { controls: true, src: URL.createObjectURL(await r.blob()) });
        output.replaceChildren(audio);
        return "Done.";
      }),
    Image: () => form([field("Model", "model", { required: true }), labelled("Prompt", h("textarea", { name: "prompt", required: true, rows: 3 }), true)],
      "Generate", async (v) => {
        const r = await (await call("/v1/images/generations", { model: v.model, prompt: v.prompt, n: 1 })).json();
        const image = r.data && r.data[0];
        const src = image && (image.b64_json ? `data:image/png;base64,${image.b64_json}` : image.url);
        if (!src) throw new Error("The answer has no image.");
        output.replaceChildren(h("img", { src, alt: v.prompt, class: "result" }));
        return "Done.";
      }),
    Video: () => form([field("Model", "model", { required: true }), field("Seconds", "seconds", { value: "5" }),
                       labelled("Prompt", h("textarea", { name: "prompt", required: true, rows: 3 }), true)],
      "Submit", async (v) => {
        const created = await (await call("/v1/videos", { model: v.model, prompt: v.prompt, seconds: v.seconds })).json();
        const task = await (await fetch(`/v1/tasks/${encodeURIComponent(created.id)}`, { headers: { authorization: `Bearer ${keyField.value}` } })).json();
        const bar = h("progress", { max: "100", value: "0", "aria-label": "progress" });
        const status = h("p", { class: "muted" }, "Submitted.");
        output.replaceChildren(bar, status);
        const url = await new Promise((resolve, reject) => {
          const events = new EventSource(task.stream_url);
          events.onmessage = (m) => {
            if (m.data === "[DONE]") return events.close();
            const e = JSON.parse(m.data);
            if (e.progress !== undefined) bar.value = e.progress;
            status.textContent = `${e.status}${e.progress !== undefined ? ` ${e.progress}%` : ""}`;
            if (e.status === "completed") { bar.value = 100; events.close(); resolve(e.url); }
            if (e.status === "failed") { events.close(); reject(new Error(e.error || "The video failed.")); }
          };
          events.onerror = () => { events.close(); reject(new Error("The progress stream closed.")); };
        });
        output.append(h("video", { controls: true, muted: true, src: url, class: "result" }));
        return "Done.";
      }),
  };
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const panel = h("div", {});
  const open = (name) => {
    for (const b of tabs.children) b.setAttribute("aria-selected", String(b.textContent === name));
    output.replaceChildren();
    panel.replaceChildren(kinds[name](), output);
  };
  for (const name of Object.keys(kinds)) tabs.append(h("button", { type: "button", role: "tab", class: "plain", onclick: () => open(name) }, name));
  open("Chat");
  return [h("h1", {}, "Playground"), h("div", { class: "card" },
    h("p", {}, "Calls go with one of your keys, billed and logged like any other call."),
    labelled("API key", keyField), tabs, panel)];
}

/// Reads a server-sent event stream of JSON chunks until `[DONE]`; an `error` chunk throws.
async function readEvents(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        onChunk(chunk);
      }
    }
  }
}

// ---- navigation and session --------------------------------------------------------------

const titles = {
  overview: "Overview", channels: "Channels", users: "Users", pricing: "Pricing", plugins: "Plugins", tasks: "Tasks",
  logs: "Request log", health: "Health", account: "Account", keys: "My keys", playground: "Playground",
};

function role() { return state.user && state.user.role === "admin" ? "admin" : "user"; }

async function show(name) {
  const set = pages[role()];
  if (!Object.hasOwn(set, name)) name = Object.keys(set)[0];
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  const page = document.getElementById("page");
  page.replaceChildren(h("p", {}, "Loading…"));
  try {
    page.replaceChildren(...(await set[name]()).flat());
  } catch (e) {
    page.replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
  }
}

function signedIn(user) {
  state.user = user;
  state.csrf = user.csrf;
  document.getElementById("sign-in").hidden = true;
  document.getElementById("bar").hidden = false;
  document.getElementById("who").textContent = `${user.name} (${user.role})`;
  document.getElementById("nav").replaceChildren(...Object.keys(pages[role()]).map((p) =>
    h("a", { href: `#${p}`, "data-page": p }, titles[p])));
  show(location.hash.slice(1));
}

function signedOut() {
  state.user = null;
  state.csrf = "";
  document.getElementById("bar").hidden = true;
  document.getElementById("page").replaceChildren();
  document.getElementById("sign-in").hidden = false;
}

window.addEventListener("hashchange", () => { if (state.user) show(location.hash.slice(1)); });

document.addEventListener("DOMContentLoaded", async () => {
  const signIn = document.getElementById("sign-in");
  signIn.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = signIn.querySelector(".error");
    error.textContent = "";
    try {
      signedIn(await api("POST", "/console/session", Object.fromEntries(new FormData(signIn).entries())));
    } catch (e) {
      error.textContent = e.message;
    }
  });
  // Signing out revokes the session on the gateway: only then is the page signed out.
  document.getElementById("sign-out").addEventListener("click", async () => {
    try {
      await api("DELETE", "/console/session");
      signedOut();
    } catch (e) {
      document.getElementById("page").prepend(h("p", { class: "error", role: "alert" }, `Not signed out: ${e.message}`));
    }
  });
  try {
    signedIn(await api("GET", "/console/session"));
  } catch {
    signedOut();
  }
});
