// callsense web dashboard: operator view + supervisor wall. Plain JS, no build step.
"use strict";
const state = { calls: {}, selected: null, last: {}, ws: null, token: null, role: null, summaries: {} };

function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }

function call(id) {
  return state.calls[id] ||= { id, operator: "", finals: [], partials: {}, emotions: [], frustrations: [], hints: {}, order: [], notes: [], risk: 0, frustration: null, latched: null, lag: 0, t: 0, customer: null, ended: false };
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
    case "call_started": c.operator = ev.operator_id || ""; c.language = ev.language; break;
    case "transcript_partial": c.partials[ev.speaker] = ev; break;
    case "transcript_final": final(c, ev); break;
    case "emotion": c.emotions.push(ev); if (ev.role === "customer") c.customer = ev; break;
    case "hint": c.hints[ev.hint_id] = { ev, action: null }; c.order.unshift(ev.hint_id); break;
    // the risk is computed once, on the server (escalation state): the dashboard only shows it
    case "risk": c.risk = ev.level; c.frustration = ev.frustration; c.latched = ev.latched ? ev : null;
      if (ev.frustration !== null && ev.frustration !== undefined) c.frustrations.push([ev.t, ev.frustration]); break;
    case "hint_feedback": if (c.hints[ev.hint_id]) c.hints[ev.hint_id].action = ev.action; break;
    case "metrics": c.lag = ev.lag_s; break;
    case "checklist": c.script = ev; break;
    case "note": c.notes.push(ev); break;
    case "call_ended": c.ended = true; loadRecent(ev.call_id); break;
    // a cluster worker stopped and another took the call over: nothing was lost, say so
    case "worker_changed": document.getElementById("status").textContent =
      `call ${ev.call_id} moved to worker ${ev.worker} at ${ev.resumed_from.toFixed(0)} s; nothing was lost`; break;
  }
  if (!state.selected) state.selected = ev.call_id;
}

// the interface in the user's language (?lang=ru|en), else the selected call's, else the browser's
const I18N = {
  en: {
    live_calls: "Live calls", by_risk: "(by risk)", call: "call", call_title: "Call", operator: "operator", customer: "customer",
    duration: "time",
    unknown: "speaker", mood: "customer", risk: "risk", lag: "lag", earlier: "earlier hints", accept: "accept",
    dismiss: "dismiss", acknowledge: "acknowledge", accepted: "accepted", dismissed: "dismissed", ended: "ended",
    High: "High", Medium: "Medium", Low: "Low", frustrated: "frustrated", uneasy: "uneasy", calm: "calm",
    cue: "CUSTOMER FRUSTRATED", critical: "CRITICAL", warning: "WARNING", info: "INFO",
    positive: "positive", neutral: "neutral", negative: "negative", frustration_line: "customer frustration",
    waiting: "waiting for calls", recent: "Recent calls", report: "report", cx: "customer experience",
    say_now: "say it now", missed: "missed", failed: "not as the script says", at_end: "at the end",
    note_to_operator: "note to the operator", send: "send", joining: "I'm joining", supervisor: "supervisor",
    supervisor_joining: "your supervisor is joining the call", summary: "summary", copy: "copy", copied: "copied",
    disputes: "Disputes", dispute: "dispute", why: "why the item is wrong", disputed: "disputed", open: "open",
    rejected: "rejected", reject: "reject", uphold: "accept",
    reasons: {
      supervisor_request: "asks for a manager", complaint_threat: "threatens a complaint", close_account: "closing the account",
      repeat_caller: "calling again about this", customer_frustrated: "customer frustrated", repeated_request: "repeating a request",
      raised_voice: "raised voice", operator_tone: "your tone", operator_interrupting: "talking over the customer",
      long_silence: "long silence", no_promises: "a promise to check",
      operator_pace: "your pace", operator_monologue: "a long monologue", talk_ratio: "your share of the talk",
    },
  },
  ru: {
    live_calls: "Звонки сейчас", by_risk: "(по риску)", call: "звонок", call_title: "Звонок", operator: "оператор",
    duration: "время",
    customer: "клиент", unknown: "говорящий", mood: "клиент", risk: "риск", lag: "задержка", earlier: "прошлые подсказки",
    accept: "принять", dismiss: "отклонить", acknowledge: "принято", accepted: "принято", dismissed: "отклонено",
    ended: "завершён", High: "Высокий", Medium: "Средний", Low: "Низкий", frustrated: "раздражён", uneasy: "напряжён",
    calm: "спокоен", cue: "КЛИЕНТ РАЗДРАЖЁН", critical: "СРОЧНО", warning: "ВНИМАНИЕ", info: "К СВЕДЕНИЮ",
    positive: "позитив", neutral: "нейтрально", negative: "негатив", frustration_line: "раздражение клиента",
    waiting: "ждём звонков", recent: "Недавние звонки", report: "отчёт", cx: "опыт клиента",
    say_now: "скажите сейчас", missed: "пропущено", failed: "не по скрипту", at_end: "в конце",
    note_to_operator: "заметка оператору", send: "отправить", joining: "подключаюсь", supervisor: "руководитель",
    supervisor_joining: "руководитель подключается к звонку", summary: "сводка", copy: "копировать", copied: "скопировано",
    disputes: "Оспаривания", dispute: "оспорить", why: "почему оценка неверна", disputed: "оспорено", open: "на рассмотрении",
    rejected: "отклонено", reject: "отклонить", uphold: "принять",
    reasons: {
      supervisor_request: "просит руководителя", complaint_threat: "грозит жалобой", close_account: "закрывает счёт",
      repeat_caller: "звонит не первый раз", customer_frustrated: "клиент раздражён", repeated_request: "повторяет просьбу",
      raised_voice: "повышает голос", operator_tone: "ваш тон", operator_interrupting: "вы перебиваете клиента",
      long_silence: "долгая тишина", no_promises: "обещание проверить",
      operator_pace: "ваш темп", operator_monologue: "долгий монолог", talk_ratio: "ваша доля разговора",
    },
  },
};
function lang() {
  const asked = new URLSearchParams(location.search).get("lang");
  const c = state.calls[state.selected];
  const pick = asked || (c && c.language) || (navigator.language || "en").slice(0, 2);
  return I18N[pick] ? pick : "en";
}
const t = key => I18N[lang()][key] ?? I18N.en[key] ?? key;
const words = reason => I18N[lang()].reasons[reason] || I18N.en.reasons[reason] || reason;

// risk as Low / Medium / High with its reason (High while a critical escalation waits for someone)
function riskWords(c) {
  if (c.latched) return t("High") + ": " + words(c.latched.reason);
  return c.risk >= 0.35 ? t("Medium") + ": " + words("customer_frustrated") : t("Low");
}

// the customer state in plain words; the cue to the operator fires at 35% (hints.customer_state)
function mood(c) {
  if (c.frustration === null || c.frustration === undefined) return "-";
  const pct = Math.round(c.frustration * 100) + "%";
  return c.frustration >= 0.35 ? `${t("frustrated")} (${pct})` : c.frustration >= 0.15 ? `${t("uneasy")} (${pct})` : t("calm");
}

function renderWall() {
  const body = document.querySelector("#calls tbody"); body.replaceChildren();
  // live calls first; among them a waiting escalation first, then by risk
  const rank = (a, b) => (a.ended - b.ended) || (!!b.latched - !!a.latched) || b.risk - a.risk;
  Object.values(state.calls).sort(rank).forEach(c => {
    const tr = el("tr", c.id === state.selected ? "sel" : ""); tr.dataset.call = c.id;
    const name = el("td", "", c.id + (c.ended ? ` (${t("ended")})` : ""));
    if (c.latched) name.append(el("span", "badge", "\u26a0 " + words(c.latched.reason)));
    if (c.ended && (state.recent || []).some(r => r.call_id === c.id)) {  // after the call: its report
      const a = el("a", "report-link", t("report"));
      a.href = `/reports/${encodeURIComponent(c.id)}?token=${encodeURIComponent(state.token)}`; a.target = "_blank";
      a.onclick = e => e.stopPropagation();
      name.append(" ", a);
    }
    tr.append(name, el("td", "", c.operator), el("td", "", mmss(c.t)),
      el("td", "mood", mood(c)), el("td", "risk " + (c.latched ? "high" : c.risk >= 0.35 ? "medium" : "low"), riskWords(c)), el("td", "", c.lag.toFixed(1) + "s"));
    tr.onclick = () => { state.selected = c.id; render(); };
    body.append(tr);
  });
}

// mood over the call: each party's valence per turn (-1 negative .. +1 positive) against the call's time,
// the customer's frustration probability dashed; axes, minute ticks and a legend
const CHART = { w: 600, h: 140, left: 76, right: 34, top: 18, bottom: 22 };
function svgEl(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
  if (text !== undefined) e.textContent = text;
  return e;
}
function mmss(s) { return `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`; }
function renderChart(c) {
  const svg = document.getElementById("chart"); svg.replaceChildren();
  const { w, h, left, right, top, bottom } = CHART, dur = Math.max(c.t, 30);
  const x = s => left + (s / dur) * (w - left - right), y = v => top + (1 - v) / 2 * (h - top - bottom);
  for (const [v, key] of [[1, "positive"], [0, "neutral"], [-1, "negative"]]) {
    svg.append(svgEl("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), stroke: v ? "#eee" : "#bbb", "stroke-dasharray": v ? "" : "4" }));
    svg.append(svgEl("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, t(key)));
  }
  const step = dur > 600 ? 300 : dur > 240 ? 60 : 30;
  for (let s = 0; s <= dur; s += step) svg.append(svgEl("text", { x: x(s), y: h - 6, "text-anchor": "middle", class: "axis" }, mmss(s)));
  const series = [["operator", "#0b6e99", e => e.valence], ["customer", "#8e24aa", e => e.valence]];
  let lx = left;
  for (const [role, color, value] of series) {
    const pts = c.emotions.filter(e => e.role === role).map(e => `${x(e.end).toFixed(1)},${y(value(e)).toFixed(1)}`);
    svg.append(svgEl("rect", { x: lx, y: 4, width: 10, height: 4, fill: color }));
    svg.append(svgEl("text", { x: lx + 14, y: 10, class: "axis" }, t(role)));
    lx += 110;
    if (!pts.length) continue;
    const pl = svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2 });
    pl.dataset.role = role; svg.append(pl);
  }
  if (c.frustrations.length) {  // the customer state: 0 .. 100% on the same height, dashed
    const pts = c.frustrations.map(([s, p]) => `${x(s).toFixed(1)},${(top + (1 - p) * (h - top - bottom)).toFixed(1)}`);
    svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: "#c62828", "stroke-width": 1.5, "stroke-dasharray": "5 3", "data-role": "frustration" }));
    svg.append(svgEl("line", { x1: lx, x2: lx + 12, y1: 6, y2: 6, stroke: "#c62828", "stroke-dasharray": "4 2" }));
    svg.append(svgEl("text", { x: lx + 16, y: 10, class: "axis" }, t("frustration_line")));
    for (const [p, label] of [[1, "100%"], [0, "0%"]])  // its own scale, on the right
      svg.append(svgEl("text", { x: w - right + 3, y: y(2 * p - 1) + 4, class: "axis frus" }, label));
  }
}

// an action shows at once; the call's own record (hint_feedback) confirms it
function send(c, id, action) {
  state.ws.send(JSON.stringify({ type: "feedback", call_id: c.id, hint_id: id, action }));
  if (c.hints[id]) c.hints[id].action = c.hints[id].action || action + " \u2026";
  render();
}

// a supervisor's note to the call's operator (recorded in the call and in the access log)
function note(c, text, joining) {
  if (text.trim()) state.ws.send(JSON.stringify({ type: "note", call_id: c.id, text: text.trim(), joining }));
}

// notes from the supervisor, newest first, for the operator (and the supervisor's own, as sent)
function renderNotes(c) {
  place(document.getElementById("notes"), c.notes.slice(-3).reverse().map(n => keep(`note|${c.id}|${n.seq}`, lang(), () => {
    const box = el("div", "note" + (n.joining ? " joining" : "")); box.dataset.seq = n.seq;
    box.append(el("b", "", t("supervisor") + ": "), el("span", "", n.joining ? t("supervisor_joining") : n.text));
    return box;
  })));
  const form = document.getElementById("note");
  form.hidden = state.role !== "supervisor" || c.ended;
  document.getElementById("note-text").placeholder = t("note_to_operator");
  document.getElementById("note-send").textContent = t("send");
}

function renderAlerts() {
  // supervisor alerts: every call with a latched critical escalation, until a supervisor acknowledges
  // it (operators act on their hint cards; the alert is the supervisor's)
  const box = document.getElementById("alerts"); box.replaceChildren();
  if (state.role !== "supervisor") return;
  Object.values(state.calls).filter(c => c.latched && !c.ended).forEach(c => {
    const h = c.hints[c.latched.hint_id]; const banner = el("div", "banner"); banner.dataset.call = c.id; banner.dataset.hint = c.latched.hint_id;
    banner.append(el("b", "", "\u26a0 " + c.id + ": "), el("span", "", h ? h.ev.title : c.latched.reason));
    const ack = el("button", "btn-ack", t("acknowledge"));
    ack.onclick = () => { send(c, c.latched.hint_id, "accepted"); ack.disabled = true; ack.textContent = t("accepted") + " \u2026"; };
    // take the escalation over: the operator sees at once that their supervisor is joining
    const join = el("button", "btn-join", t("joining"));
    join.onclick = () => { note(c, t("joining"), true); join.disabled = true; };
    banner.append(ack, join);
    box.append(banner);
  });
}

// the one card to act on now: the most urgent hint not yet answered. A critical one stays until it is
// answered; the others go stale after STALE_S of the call (a hold card ends with the hold).
const STALE_S = 45, RANK = { critical: 0, warning: 1, info: 2 };
const holdOver = (c, h) => h.ev.reason === "long_silence" && c.finals.some(f => f.start >= h.ev.t);  // someone spoke since
function pinned(c) {
  const open = c.order.map(id => c.hints[id])
    .filter(h => !h.action && !holdOver(c, h) && (h.ev.severity === "critical" || c.t - h.ev.t <= STALE_S));
  open.sort((a, b) => RANK[a.ev.severity] - RANK[b.ev.severity] || b.ev.t - a.ev.t);
  return open.length ? open[0].ev.hint_id : null;
}

// The children of `box` become `nodes`, in order, moving only what is out of place: a card or line that
// did not change stays the same element (a full rebuild replaced buttons under the operator's pointer)
function place(box, nodes) {
  nodes.forEach((n, i) => { if (box.children[i] !== n) box.insertBefore(n, box.children[i] || null); });
  while (box.children.length > nodes.length) box.lastChild.remove();
}

// elements by key, rebuilt only when what they show (their signature) changed
const built = new Map();
function keep(key, sig, make) {
  const had = built.get(key);
  if (had && had.sig === sig) return had.node;
  const node = make();
  built.delete(key);
  built.set(key, { sig, node });
  if (built.size > 5000) built.delete(built.keys().next().value);  // an all-day wall: the oldest go
  return node;
}

function renderHints(c) {
  const now = pinned(c);
  place(document.getElementById("now"), now ? [card(c, now)] : []);
  place(document.getElementById("hints"), c.order.filter(id => id !== now).map(id => card(c, id)));
}

function card(c, id) {
  const { ev, action } = c.hints[id];
  return keep(`hint|${c.id}|${id}`, [action, state.role, lang()].join("|"), () => {
    // the customer state's cue is not an escalation: its own look, and the turns that show it
    const cue = ev.reason === "customer_frustrated";
    const box = el("div", "hint " + (cue ? "cue" : ev.severity)); box.dataset.hint = id;
    box.append(el("b", "", t(cue ? "cue" : ev.severity) + ": "), el("span", "", ev.title));
    if (cue) (ev.evidence.turns || []).forEach(t => box.append(el("div", "why", "\u201c" + t.quote + "\u201d")));
    ev.phrases.forEach(p => box.append(el("div", "phr", "\u201c" + p + "\u201d")));
    if (action) box.append(el("div", "done", t(action.split(" ")[0]) + action.slice(action.split(" ")[0].length)));
    else if (state.role === "operator") for (const a of ["accepted", "dismissed"]) {
      const b = el("button", "btn-" + a, t(a === "accepted" ? "accept" : "dismiss"));
      b.onclick = () => send(c, id, a);
      box.append(b);
    }
    return box;
  });
}

// the script checklist as the server judges it now: ticked with the words that ticked it, due items
// first-class (say it now), end-of-call items marked as such
const MARK = { done: "\u2713", due: "!", missed: "\u2717", failed: "\u2717", pending: "\u25cb" };
function renderScript(c) {
  const box = document.getElementById("script"), ev = c.script;
  place(box, !ev ? [] : ev.items.map(i => {
    const d = disputeOf(c.id, i.id), may = c.ended && state.role === "operator" && i.status !== "done";
    const sig = [i.status, (ev.evidence[i.id] || {}).text, lang(), d ? d.outcome : "", may].join("|");
    return keep(`script|${c.id}|${i.id}`, sig, () => {
      const li = el("li", "item " + i.status); li.dataset.item = i.id;
      li.append(el("b", "", MARK[i.status] + " "), el("span", "", i.title));
      const note = { due: t("say_now"), missed: t("missed"), failed: t("failed") }[i.status] || (i.at_end && i.status === "pending" ? t("at_end") : "");
      if (note) li.append(el("small", "", " \u2014 " + note));
      const said = ev.evidence[i.id];
      if (said) li.title = "\u201c" + said.text + "\u201d";  // the words that ticked it, on hover
      if (d) li.append(el("small", "dispute " + d.outcome, ` \u2014 ${t("disputed")}: ${t(d.outcome)}`));
      else if (may) { const b = el("button", "btn-dispute", t("dispute")); b.onclick = () => disputeForm(li, c, i); li.append(" ", b); }
      return li;
    });
  }));
}

// disputes: after the call its operator answers a scorecard item (the report's checklist, judged by the
// same code as the live one); a supervisor accepts or rejects; the server checks who may do which
const disputeOf = (callId, item) => (state.disputes || []).find(d => d.call_id === callId && d.item === item);
function disputeForm(li, c, i) {
  if (li.querySelector("form")) return;
  const form = el("form", "dispute-form"), box = el("input", "dispute-text");
  box.maxLength = 280; box.placeholder = t("why"); box.autocomplete = "off";
  form.append(box, el("button", "dispute-send", t("send")));
  form.onsubmit = e => {
    e.preventDefault();
    if (box.value.trim()) state.ws.send(JSON.stringify({ type: "dispute", call_id: c.id, item: i.id, comment: box.value.trim() }));
  };
  li.append(form); box.focus();
}
function decide(d, outcome) { state.ws.send(JSON.stringify({ type: "dispute_decision", dispute_id: d.id, outcome })); }
setInterval(() => fetchDisputes(), 10000);  // the analyst sees new disputes, the operator the decisions
function fetchDisputes() {
  if (!state.token) return;
  fetch(`/api/disputes?token=${encodeURIComponent(state.token)}`).then(r => r.ok ? r.json() : []).then(d => { state.disputes = d; render(); });
}
function gotDispute(d) {
  state.disputes = [d, ...(state.disputes || []).filter(x => x.id !== d.id)];
  render();
}
function renderDisputes() {
  const list = document.getElementById("disputes");
  document.getElementById("disputes-title").hidden = !(state.disputes || []).length;
  place(list, (state.disputes || []).map(d => keep(`dispute|${d.id}`, [d.outcome, lang(), state.role].join("|"), () => {
    const li = el("li", "dispute " + d.outcome); li.dataset.dispute = d.id;
    li.append(el("b", "", `${d.call_id} \u00b7 ${d.item}`), el("span", "", ` ${d.by}: \u201c${d.comment}\u201d `), el("small", "outcome", t(d.outcome)));
    if (d.outcome === "open" && state.role === "supervisor") {
      for (const [outcome, label] of [["accepted", "uphold"], ["rejected", "reject"]]) {
        const b = el("button", "btn-" + label, t(label)); b.onclick = () => decide(d, outcome); li.append(" ", b);
      }
    }
    return li;
  })));
}

function renderTranscript(c) {
  const box = document.getElementById("transcript");
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 40;  // reading back: left alone
  const emo = Object.fromEntries(c.emotions.map(e => [e.utterance_id, e]));
  const lines = c.finals.slice(-40).map(f => {
    const e = emo[f.utterance_id];
    // only what a reader should notice: no tag for neutral or not-sure readings
    const tag = e && e.label !== "uncertain" && e.label !== "neutral" ? e.label : "";
    return keep(`line|${c.id}|${f.utterance_id}`, [f.text, f.role, tag, lang()].join("|"), () => {
      const line = el("div", "line final"); line.append(el("b", f.role, t(f.role) + ": "), el("span", "", f.text));
      if (tag) line.append(el("span", "tag " + tag, tag));
      return line;
    });
  });
  const partials = Object.values(c.partials).map(p => el("div", "line partial", t(p.role) + ": " + p.text + " \u2026"));
  place(box, [...lines, ...partials]);
  if (atEnd) box.scrollTop = box.scrollHeight;  // the newest line in view
}

// ended calls with a link to each report (the server lists this token's calls only; reading one is logged)
// a call's report is written after its end (its last revisions first): after `call_ended` the list is
// asked for every 3 s until the call is in it (for 3 minutes at most), and every half minute in any case
const awaited = new Map();  // call id -> when we stop asking
function loadRecent(id) { awaited.set(id, Date.now() + 180000); fetchRecent(); }
setInterval(() => fetchRecent(), 30000);
function fetchRecent() {
  if (!state.token) return;
  fetch(`/api/calls?token=${encodeURIComponent(state.token)}`).then(r => r.ok ? r.json() : []).then(calls => {
    state.recent = calls; fetchDisputes(); render();  // the list, the wall's report links, their disputes
    calls.forEach(r => awaited.delete(r.call_id));
    for (const [id, until] of awaited) if (Date.now() > until) awaited.delete(id);
    if (awaited.size) setTimeout(fetchRecent, 3000);
  });
}
function renderRecent() {
  const list = document.getElementById("recent"); list.replaceChildren();
  (state.recent || []).forEach(r => {
    const li = el("li"), a = el("a", "", r.call_id);
    a.href = `/reports/${encodeURIComponent(r.call_id)}?token=${encodeURIComponent(state.token)}`; a.target = "_blank";
    const when = r.started ? new Date(r.started * 1000).toLocaleString(lang()) : "";
    const info = [r.operator_id, when, r.duration_s ? mmss(r.duration_s) : "", r.status !== "done" ? r.status : "",
      r.customer_experience !== null && r.customer_experience !== undefined ? `${t("cx")} ${Math.round(r.customer_experience)}` : ""];
    li.append(a, el("small", "", " " + info.filter(Boolean).join(" \u00b7 ")));
    list.append(li);
  });
}

function render() {
  document.documentElement.lang = lang();
  document.querySelectorAll("[data-i18n]").forEach(e => { e.textContent = t(e.dataset.i18n); });
  renderAlerts(); renderWall(); renderRecent(); renderDisputes();
  const c = state.calls[state.selected];
  if (!c) { document.getElementById("call-id").textContent = t("waiting"); return; }
  document.getElementById("call-id").textContent = c.id;
  document.getElementById("timer").textContent = `${mmss(c.t)} ${t("lag")} ${c.lag.toFixed(1)}s`;
  renderChart(c); renderNotes(c); renderHints(c); renderScript(c); renderTranscript(c); renderSummary(c);
}

// the call's summary so far, on request (the operator pastes it into the ticket)
function renderSummary(c) {
  document.getElementById("summary-ask").hidden = !state.role;
  const got = state.summaries[c.id], box = document.getElementById("summary");
  box.hidden = !got;
  if (got) document.getElementById("summary-text").textContent = got.text;
}
document.getElementById("summary-ask").onclick = () => {
  const c = state.calls[state.selected];
  if (c && state.ws) state.ws.send(JSON.stringify({ type: "summary", call_id: c.id }));
};
document.getElementById("summary-copy").onclick = () => {
  const text = document.getElementById("summary-text").textContent;
  if (navigator.clipboard) navigator.clipboard.writeText(text).then(() => { document.getElementById("status").textContent = t("copied"); });
};

function connect(token) {
  state.token = token;
  fetch(`/whoami?token=${encodeURIComponent(token)}`).then(r => r.ok ? r.json() : {}).then(w => { state.role = w.role || null; render(); });
  fetchRecent();
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/console?token=${encodeURIComponent(token)}`);
  state.ws = ws;
  ws.onopen = () => { ws.send(JSON.stringify({ type: "resume", after: state.last })); document.getElementById("status").textContent = "connected"; };
  ws.onmessage = m => {
    const d = JSON.parse(m.data);
    if (d.type === "notice" || d.type === "error") { document.getElementById("status").textContent = d.message; return; }
    if (d.type === "summary") { state.summaries[d.call_id] = d; render(); return; }  // an answer, not an event of the call
    if (d.type === "dispute") { gotDispute(d); return; }
    apply(d); render();
  };
  ws.onclose = e => {
    document.getElementById("status").textContent = "disconnected: " + (e.reason || e.code);
    if (e.code !== 4001) setTimeout(() => connect(token), 1000);
  };
}

// keyboard: A accepts and D dismisses the card to act on now (operators), outside the token field
document.addEventListener("keydown", e => {
  const c = state.calls[state.selected], id = c && pinned(c);
  if (!id || state.role !== "operator" || e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
  const action = { KeyA: "accepted", KeyD: "dismissed" }[e.code];  // by key position: any layout
  if (action) send(c, id, action);
});

document.getElementById("note").onsubmit = e => {
  e.preventDefault(); const c = state.calls[state.selected], box = document.getElementById("note-text");
  if (c) { note(c, box.value, false); box.value = ""; }
};
document.getElementById("login").onsubmit = e => { e.preventDefault(); connect(document.getElementById("token").value); };
const given = new URLSearchParams(location.search).get("token"); if (given) { document.getElementById("token").value = given; connect(given); }
