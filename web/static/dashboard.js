// CrowdPass live dashboard, fed by server-sent events (no polling).
"use strict";

const $ = (id) => document.getElementById(id);
const series = { accepted: [], decided: [], queue: [] };
let last = null;

function push(name, v) {
  const s = series[name];
  s.push(v);
  if (s.length > 120) s.shift();
}

function draw(id, values) {
  const c = $(id);
  const w = (c.width = c.clientWidth * devicePixelRatio), h = (c.height = 48 * devicePixelRatio);
  const g = c.getContext("2d");
  g.clearRect(0, 0, w, h);
  if (values.length < 2) return;
  const max = Math.max(1, ...values);
  g.strokeStyle = "#38bdf8";
  g.lineWidth = 2 * devicePixelRatio;
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * w, y = h - (v / max) * (h - 4) - 2;
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}

function render(s) {
  const at = new Date(s.at).getTime();
  if (last) {
    const dt = Math.max((at - last.at) / 1000, 0.001);
    const acc = Math.max(0, (s.accepted_total - last.accepted) / dt);
    const dec = Math.max(0, (s.decided_total - last.decided) / dt);
    $("accepted-rate").textContent = acc.toFixed(0);
    $("decided-rate").textContent = dec.toFixed(0);
    push("accepted", acc);
    push("decided", dec);
  }
  last = { at, accepted: s.accepted_total, decided: s.decided_total };
  $("queue").textContent = s.queue_depth;
  push("queue", s.queue_depth);
  $("backlog").textContent = s.outbox_backlog;
  $("notify").textContent = `${s.notification_p50_ms.toFixed(0)} / ${s.notification_p99_ms.toFixed(0)} ms`;
  draw("accepted-chart", series.accepted);
  draw("decided-chart", series.decided);
  draw("queue-chart", series.queue);

  const cards = (s.events || []).flatMap((e) => e.categories.map((c) => {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.categoryId = c.category_id;
    const sold = s.sold_out_at && s.sold_out_at[c.category_id];
    card.innerHTML = `<div class="muted"></div><div class="big"><span class="remaining"></span> / <span class="capacity"></span></div>
      <div class="bar"><span></span></div><div class="muted soldout"></div>`;
    card.querySelector(".muted").textContent = `${e.name} · ${c.name}`;
    card.querySelector(".remaining").textContent = c.remaining;
    card.querySelector(".capacity").textContent = c.capacity;
    card.querySelector(".bar span").style.width = `${(100 * c.remaining) / Math.max(c.capacity, 1)}%`;
    card.querySelector(".soldout").textContent = sold ? "sold out at " + new Date(sold).toLocaleTimeString() : "";
    return card;
  }));
  $("stock").replaceChildren(...cards);
}

function connect() {
  const es = new EventSource("/dashboard/stream");
  es.onopen = () => { $("conn").className = "online"; $("conn").textContent = "live"; };
  es.onmessage = (m) => render(JSON.parse(m.data));
  es.onerror = () => { $("conn").className = "offline"; $("conn").textContent = "reconnecting…"; };
}
connect();
