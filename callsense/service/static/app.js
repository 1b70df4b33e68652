// callsense web dashboard: operator view + supervisor wall. Plain JS, no build step.
"use strict";
const state = { calls: {}, selected: null, last: {}, ws: null, token: null };

function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }

function call(id) {
  return state.calls[id] ||= { id, operator: "", finals: [], partials: {}, emotions: [], hints: {}, order: [], risk: 0, frustration: null, latched: null, lag: 0, t: 0, customer: null, ended: false };
}

// a revised final (the turn decoded again with the speaker's others) corrects its line, or withdraws it
function final(c, ev) {
  const i = ev.revision ? c.finals.findIndex(f => f.utterance_id === ev.utterance_id) : -1;
  if (i >= 0) { if (ev.text) c.finals[i] = ev; else c.finals.splice(i, 1); return; }
  delete c.partials[ev.speaker];
  if (ev.text) c.finals.push(ev);
}

function apply(ev) {
  state.last[ev.call_id] = Math.max(state.last[ev.call_id] || 0, ev.seq);
  const c = call(ev.call_id); c.t = Math.max(c.t, ev.t);
  switch (ev.type) {
    case "call_started": c.operator = ev.operator_id || ""; break;
    case "transcript_partial": c.partials[ev.speaker] = ev; break;
    case "transcript_final": final(c, ev); break;
    case "emotion": c.emotions.push(ev); if (ev.role === "customer") c.customer = ev; break;
    case "hint": c.hints[ev.hint_id] = { ev, action: null }; c.order.unshift(ev.hint_id); break;
    // the risk is computed once, on the server (escalation state): the dashboard only shows it
    case "risk": c.risk = ev.level; c.frustration = ev.frustration; c.latched = ev.latched ? ev : null; break;
    case "hint_feedback": if (c.hints[ev.hint_id]) c.hints[ev.hint_id].action = ev.action; break;
    case "metrics": c.lag = ev.lag_s; break;
    case "call_ended": c.ended = true; break;
    // a cluster worker stopped and another took the call over: nothing was lost, say so
    case "worker_changed": document.getElementById("status").textContent =
      `call ${ev.call_id} moved to worker ${ev.worker} at ${ev.resumed_from.toFixed(0)} s; nothing was lost`; break;
  }
  if (!state.selected) state.selected = ev.call_id;
}

// what each reason means, in plain words (the events keep the ids)
const REASON_WORDS = {
  supervisor_request: "asks for a manager", complaint_threat: "threatens a complaint", close_account: "closing the account",
  repeat_caller: "calling again about this", customer_frustrated: "customer frustrated", repeated_request: "repeating a request",
  raised_voice: "raised voice", operator_tone: "your tone", operator_interrupting: "talking over the customer",
  long_silence: "long silence", no_promises: "a promise to check",
};
const words = reason => REASON_WORDS[reason] || reason;

// risk as Low / Medium / High with its reason (High while a critical escalation waits for someone)
function riskWords(c) {
  if (c.latched) return "High: " + words(c.latched.reason);
  return c.risk >= 0.35 ? "Medium: customer frustrated" : "Low";
}

// the customer state in plain words; the cue to the operator fires at 35% (hints.customer_state)
function mood(c) {
  if (c.frustration === null || c.frustration === undefined) return "-";
  const pct = Math.round(c.frustration * 100) + "%";
  return c.frustration >= 0.35 ? `frustrated (${pct})` : c.frustration >= 0.15 ? `uneasy (${pct})` : "calm";
}

function renderWall() {
  const body = document.querySelector("#calls tbody"); body.replaceChildren();
  Object.values(state.calls).sort((a, b) => b.risk - a.risk).forEach(c => {
    const tr = el("tr", c.id === state.selected ? "sel" : ""); tr.dataset.call = c.id;
    const name = el("td", "", c.id + (c.ended ? " (ended)" : ""));
    if (c.latched) name.append(el("span", "badge", "\u26a0 " + words(c.latched.reason)));
    tr.append(name, el("td", "", c.operator),
      el("td", "mood", mood(c)), el("td", "risk " + (c.latched ? "high" : c.risk >= 0.35 ? "medium" : "low"), riskWords(c)), el("td", "", c.lag.toFixed(1) + "s"));
    tr.onclick = () => { state.selected = c.id; render(); };
    body.append(tr);
  });
}

function renderChart(c) {
  const svg = document.getElementById("chart"); svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg", dur = Math.max(c.t, 1);
  const mid = document.createElementNS(ns, "line");
  Object.entries({ x1: 0, y1: 60, x2: 600, y2: 60, stroke: "#bbb", "stroke-dasharray": "4" }).forEach(([k, v]) => mid.setAttribute(k, v));
  svg.append(mid);
  for (const [role, color] of [["operator", "#0b6e99"], ["customer", "#8e24aa"]]) {
    const pts = c.emotions.filter(e => e.role === role).map(e => `${(e.end / dur * 600).toFixed(1)},${(60 - e.valence * 54).toFixed(1)}`);
    if (!pts.length) continue;
    const pl = document.createElementNS(ns, "polyline");
    pl.setAttribute("points", pts.join(" ")); pl.setAttribute("fill", "none"); pl.setAttribute("stroke", color); pl.setAttribute("stroke-width", "2");
    pl.dataset.role = role; svg.append(pl);
  }
}

function renderAlerts() {
  // supervisor alerts: every call with a latched critical escalation, until someone acknowledges it
  const box = document.getElementById("alerts"); box.replaceChildren();
  Object.values(state.calls).filter(c => c.latched && !c.ended).forEach(c => {
    const h = c.hints[c.latched.hint_id]; const banner = el("div", "banner"); banner.dataset.call = c.id; banner.dataset.hint = c.latched.hint_id;
    banner.append(el("b", "", "\u26a0 " + c.id + ": "), el("span", "", h ? h.ev.title : c.latched.reason));
    const ack = el("button", "btn-ack", "acknowledge");
    ack.onclick = () => state.ws.send(JSON.stringify({ type: "feedback", call_id: c.id, hint_id: c.latched.hint_id, action: "accepted" }));
    banner.append(ack);
    box.append(banner);
  });
}

function renderHints(c) {
  const box = document.getElementById("hints"); box.replaceChildren();
  c.order.slice(0, 4).forEach(id => {
    const { ev, action } = c.hints[id];
    // the customer state's cue is not an escalation: its own look, and the turns that show it
    const cue = ev.reason === "customer_frustrated";
    const card = el("div", "hint " + (cue ? "cue" : ev.severity)); card.dataset.hint = id;
    card.append(el("b", "", (cue ? "CUSTOMER FRUSTRATED" : ev.severity.toUpperCase()) + ": "), el("span", "", ev.title));
    if (cue) (ev.evidence.turns || []).forEach(t => card.append(el("div", "why", "\u201c" + t.quote + "\u201d")));
    ev.phrases.forEach(p => card.append(el("div", "phr", "\u201c" + p + "\u201d")));
    if (action) card.append(el("div", "done", action));
    else for (const a of ["accepted", "dismissed"]) {
      const b = el("button", "btn-" + a, a === "accepted" ? "accept" : "dismiss");
      b.onclick = () => state.ws.send(JSON.stringify({ type: "feedback", call_id: c.id, hint_id: id, action: a }));
      card.append(b);
    }
    box.append(card);
  });
}

function renderTranscript(c) {
  const box = document.getElementById("transcript"); box.replaceChildren();
  const emo = Object.fromEntries(c.emotions.map(e => [e.utterance_id, e]));
  c.finals.slice(-40).forEach(f => {
    const line = el("div", "line final"); line.append(el("b", f.role, f.role + ": "), el("span", "", f.text));
    // only what a reader should notice: no tag for neutral or not-sure readings
    const e = emo[f.utterance_id]; if (e && e.label !== "uncertain" && e.label !== "neutral") line.append(el("span", "tag " + e.label, e.label));
    box.append(line);
  });
  Object.values(c.partials).forEach(p => box.append(el("div", "line partial", p.role + ": " + p.text + " \u2026")));
}

function render() {
  renderAlerts(); renderWall();
  const c = state.calls[state.selected]; if (!c) return;
  document.getElementById("call-id").textContent = c.id;
  document.getElementById("timer").textContent = `${Math.floor(c.t / 60)}:${String(Math.floor(c.t % 60)).padStart(2, "0")} lag ${c.lag.toFixed(1)}s`;
  renderChart(c); renderHints(c); renderTranscript(c);
}

function connect(token) {
  state.token = token;
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/console?token=${encodeURIComponent(token)}`);
  state.ws = ws;
  ws.onopen = () => { ws.send(JSON.stringify({ type: "resume", after: state.last })); document.getElementById("status").textContent = "connected"; };
  ws.onmessage = m => { const d = JSON.parse(m.data); if (d.type === "notice" || d.type === "error") { document.getElementById("status").textContent = d.message; return; } apply(d); render(); };
  ws.onclose = e => {
    document.getElementById("status").textContent = "disconnected: " + (e.reason || e.code);
    if (e.code !== 4001) setTimeout(() => connect(token), 1000);
  };
}

document.getElementById("login").onsubmit = e => { e.preventDefault(); connect(document.getElementById("token").value); };
const t = new URLSearchParams(location.search).get("token"); if (t) { document.getElementById("token").value = t; connect(t); }
