// The Petrel dashboard: polls the admin API, draws the message rates,
// lists bridges and clients (with a kick button), and shows the topic
// tree of subscriptions and retained messages. No build step, no library.
"use strict";

const HISTORY = 300; // seconds of rates kept for the chart
const state = {
  token: sessionStorage.getItem("petrel-token") || "",
  last: null, // the previous /api/v1/stats, for rates
  rates: [], // {in, out} per poll
};

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    document.getElementById("token-form").hidden = false;
    setStatus("token needed", false);
    throw new Error("unauthorized");
  }
  if (!response.ok && response.status !== 202 && response.status !== 204) {
    throw new Error(path + ": " + response.status);
  }
  return response.status === 204 || response.status === 202 ? null : response.json();
}

function setStatus(text, ok) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = "status " + (ok ? "ok" : "bad");
}

function set(id, value) {
  document.getElementById(id).textContent = value;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24, m = Math.floor(seconds / 60) % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (seconds % 60) + "s";
}

async function pollStats() {
  const stats = await api("/api/v1/stats");
  const now = performance.now();
  if (state.last) {
    const seconds = Math.max((now - state.last.at) / 1000, 0.001);
    const rate = {
      in: Math.max(0, (stats.messages_received - state.last.stats.messages_received) / seconds),
      out: Math.max(0, (stats.messages_sent - state.last.stats.messages_sent) / seconds),
    };
    state.rates.push(rate);
    if (state.rates.length > HISTORY) state.rates.shift();
    set("rate-in", Math.round(rate.in));
    set("rate-out", Math.round(rate.out));
  }
  state.last = { at: now, stats };
  set("connections", stats.connections);
  set("clients-connected", stats.clients_connected);
  set("sessions-offline", stats.sessions_offline);
  set("dropped", stats.messages_dropped);
  set("subscriptions", stats.subscriptions);
  set("retained", stats.retained_messages);
  set("store-commits", stats.store_commits);
  set("uptime", "up " + duration(stats.uptime_seconds));
  drawChart();
}

function drawChart() {
  const canvas = document.getElementById("rate-chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 900, height = canvas.clientHeight || 220;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const pad = { left: 56, right: 8, top: 8, bottom: 18 };
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const max = Math.max(1, ...state.rates.map((r) => Math.max(r.in, r.out)));
  const top = niceCeil(max);
  g.strokeStyle = "#dde1e6";
  g.fillStyle = "#6b7480";
  g.font = "11px system-ui, sans-serif";
  g.textAlign = "right";
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + plotH - (plotH * i) / 4;
    g.beginPath();
    g.moveTo(pad.left, y);
    g.lineTo(width - pad.right, y);
    g.stroke();
    g.fillText(compact((top * i) / 4), pad.left - 6, y + 4);
  }
  g.textAlign = "left";
  g.fillText("-" + HISTORY / 60 + " min", pad.left, height - 4);
  g.textAlign = "right";
  g.fillText("now", width - pad.right, height - 4);
  const x = (i) => pad.left + plotW - ((state.rates.length - 1 - i) * plotW) / (HISTORY - 1);
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  for (const [key, color] of [["in", "#1f77b4"], ["out", "#e8771c"]]) {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    state.rates.forEach((rate, i) => (i ? g.lineTo(x(i), y(rate[key])) : g.moveTo(x(i), y(rate[key]))));
    g.stroke();
  }
  // What a test (or a curious user) can read of the chart.
  canvas.dataset.points = String(state.rates.length);
  canvas.dataset.maxIn = String(Math.round(Math.max(0, ...state.rates.map((r) => r.in))));
  canvas.dataset.maxOut = String(Math.round(Math.max(0, ...state.rates.map((r) => r.out))));
}

function niceCeil(value) {
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function compact(value) {
  if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (value >= 1e3) return (value / 1e3).toFixed(1) + "k";
  return String(Math.round(value));
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

async function pollBridges() {
  const { data } = await api("/api/v1/bridges");
  const body = document.querySelector("#bridges tbody");
  body.replaceChildren();
  for (const bridge of data) {
    const row = body.insertRow();
    row.dataset.bridge = bridge.name;
    cell(row, bridge.name);
    cell(row, bridge.state, bridge.state);
    cell(row, bridge.address);
    cell(row, bridge.queued);
    cell(row, bridge.forwarded);
    cell(row, bridge.last_error ? bridge.last_error.message : "");
    const button = document.createElement("button");
    button.textContent = "Reconnect";
    button.onclick = () => api("/api/v1/bridges/" + encodeURIComponent(bridge.name) + "/reconnect", { method: "POST" }).catch(report);
    row.insertCell().append(button);
  }
  if (!data.length) cell(body.insertRow(), "No bridge configured.", "muted").colSpan = 7;
}

async function pollClients() {
  const prefix = document.getElementById("client-search").value;
  const query = new URLSearchParams({ limit: "100" });
  if (prefix) query.set("id_prefix", prefix);
  const { data, meta } = await api("/api/v1/clients?" + query);
  const body = document.querySelector("#clients tbody");
  body.replaceChildren();
  for (const client of data) {
    const row = body.insertRow();
    row.dataset.clientId = client.client_id;
    cell(row, client.client_id);
    cell(row, client.peer);
    cell(row, client.protocol);
    cell(row, client.username);
    cell(row, client.keep_alive + " s");
    cell(row, new Date(client.connected_at * 1000).toLocaleString());
    const button = document.createElement("button");
    button.textContent = "Kick";
    button.className = "kick";
    button.onclick = () => kick(client.client_id);
    row.insertCell().append(button);
  }
  set("clients-count", meta.count > data.length ? `${data.length} of ${meta.count} shown` : `${meta.count} connected`);
}

async function kick(clientId) {
  try {
    await api("/api/v1/clients/" + encodeURIComponent(clientId), { method: "DELETE" });
    await pollClients();
  } catch (error) {
    report(error);
  }
}

async function pollTree() {
  const [subscriptions, retained] = await Promise.all([
    api("/api/v1/subscriptions?limit=1000"),
    api("/api/v1/retained?limit=1000"),
  ]);
  const root = { children: new Map(), subs: 0, retained: false };
  const node = (path) => {
    let at = root;
    for (const level of path.split("/")) {
      if (!at.children.has(level)) at.children.set(level, { children: new Map(), subs: 0, retained: false });
      at = at.children.get(level);
    }
    return at;
  };
  for (const s of subscriptions.data) node(s.filter).subs += 1;
  for (const r of retained.data) node(r.topic).retained = true;
  const render = (at) => {
    const list = document.createElement("ul");
    for (const [level, child] of [...at.children.entries()].sort()) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = level === "" ? "(empty)" : level;
      item.append(name);
      if (child.subs) {
        const subs = document.createElement("span");
        subs.className = "subs";
        subs.textContent = ` ● ${child.subs} subscription${child.subs > 1 ? "s" : ""}`;
        item.append(subs);
      }
      if (child.retained) {
        const ret = document.createElement("span");
        ret.className = "ret";
        ret.textContent = " ◆ retained";
        item.append(ret);
      }
      if (child.children.size) item.append(render(child));
      list.append(item);
    }
    return list;
  };
  const tree = document.getElementById("topic-tree");
  tree.replaceChildren(root.children.size ? render(root) : Object.assign(document.createElement("p"), { className: "muted", textContent: "Nothing subscribed or retained." }));
}

function report(error) {
  if (String(error).includes("unauthorized")) return;
  setStatus(String(error.message || error), false);
}

function every(ms, poll) {
  const run = () => poll().then(() => setStatus("live", true), report).finally(() => setTimeout(run, ms));
  run();
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("petrel-token", state.token);
  document.getElementById("token-form").hidden = true;
});
document.getElementById("client-search").addEventListener("input", () => pollClients().catch(report));

api("/api/v1/version")
  .then((v) => set("version", "v" + v.version))
  .catch(report);
every(1000, pollStats);
every(2000, pollBridges);
every(2000, pollClients);
every(5000, pollTree);
