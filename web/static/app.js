// CrowdPass buy page: one Idempotency-Key per purchase intent, outcomes live
// over the WebSocket, reconnecting with backoff and re-subscribing.
"use strict";

const state = { token: null, customer: null, events: [], orders: new Map(), intent: null, ws: null, backoff: 500 };
const $ = (id) => document.getElementById(id);

async function signIn() {
  const saved = localStorage.getItem("crowdpass-demo");
  if (saved) Object.assign(state, JSON.parse(saved));
  if (!state.token) {
    const res = await fetch("/demo/token", { method: "POST" });
    if (!res.ok) throw new Error("sign-in is only available in demo mode");
    const body = await res.json();
    state.token = body.token;
    state.customer = body.customer;
    localStorage.setItem("crowdpass-demo", JSON.stringify({ token: state.token, customer: state.customer }));
  }
  $("who").textContent = "signed in as " + state.customer;
}

async function loadEvents() {
  const res = await fetch("/events");
  const body = await res.json();
  state.events = body.events || [];
  const sel = $("event");
  const previous = sel.value;
  sel.replaceChildren(...state.events.map((e) => new Option(e.name, e.event_id)));
  if (previous && state.events.some((e) => e.event_id === previous)) sel.value = previous;
  renderCategories();
}

function currentEvent() { return state.events.find((e) => e.event_id === $("event").value); }

function renderCategories() {
  const ev = currentEvent();
  const sel = $("category");
  const previous = sel.value;
  if (!ev) { sel.replaceChildren(); return; }
  sel.replaceChildren(...ev.categories.map((c) => {
    const o = new Option(`${c.name} · ${c.remaining} of ${c.capacity} left · ${(c.price_cents / 100).toFixed(2)}`, c.category_id);
    o.dataset.name = c.name;
    return o;
  }));
  if (previous && ev.categories.some((c) => c.category_id === previous)) sel.value = previous;
  $("quantity").max = ev.max_per_customer;
}

function payload() {
  return { event_id: $("event").value, category_id: $("category").value, quantity: Number($("quantity").value) };
}

// A purchase intent keeps its key until it is answered, and for two seconds
// after, so a double click or an automatic retry resends the same key and
// never buys twice; the server replays the first answer.
async function buy(ev) {
  ev.preventDefault();
  const body = payload();
  const same = state.intent && JSON.stringify(state.intent.body) === JSON.stringify(body) &&
    (!state.intent.answeredAt || Date.now() - state.intent.answeredAt < 2000);
  if (!same) state.intent = { key: crypto.randomUUID(), body };
  if (state.intent.sending) return;
  state.intent.sending = true;
  $("buy-button").disabled = true;
  $("message").textContent = "Sending…";
  const intent = state.intent;
  try {
    for (let attempt = 0, wait = 300; attempt < 8; attempt++, wait = Math.min(wait * 2, 4000)) {
      let res;
      try {
        res = await fetch("/orders", {
          method: "POST",
          headers: { "Authorization": "Bearer " + state.token, "Idempotency-Key": intent.key, "Content-Type": "application/json" },
          body: JSON.stringify(intent.body),
        });
      } catch (e) {
        $("message").textContent = "Network trouble, retrying…";
        await new Promise((r) => setTimeout(r, wait));
        continue;
      }
      const answer = await res.json();
      if (res.status === 202) {
        upsert({ ...answer });
        subscribe(answer.order_id);
        $("message").textContent = "Order received. Waiting for the outcome…";
        intent.answeredAt = Date.now();
        return;
      }
      if (res.status === 503 || answer.code === "request_in_progress") {
        await new Promise((r) => setTimeout(r, wait));
        continue;
      }
      $("message").textContent = {
        sold_out: "Sold out: not enough tickets left in this category.",
        limit_exceeded: "Limit reached: you cannot buy more tickets for this event.",
        sale_not_open: "The sale has not opened yet.",
        sale_closed: "The sale is closed.",
      }[answer.code] || (answer.detail || "The order was refused.");
      intent.answeredAt = Date.now();
      return;
    }
    $("message").textContent = "The service is busy; press Buy again to retry the same purchase.";
  } finally {
    intent.sending = false;
    $("buy-button").disabled = false;
  }
}

function upsert(order) {
  const prev = state.orders.get(order.order_id) || {};
  // An outcome never goes back to pending.
  if (prev.status && prev.status !== "pending" && order.status === "pending") return;
  state.orders.set(order.order_id, { ...prev, ...order });
  renderOrders();
}

function renderOrders() {
  const list = $("orders");
  list.replaceChildren(...[...state.orders.values()].reverse().map((o) => {
    const li = document.createElement("li");
    li.dataset.orderId = o.order_id;
    const status = document.createElement("span");
    status.className = "status " + o.status;
    let text = o.status;
    if (o.status === "confirmed") text = "confirmed · seats " + (o.tickets || []).map((t) => t.seat).join(", ");
    if (o.status === "rejected") text = o.reason === "sold_out" ? "sold out" : o.reason === "limit_exceeded" ? "limit reached" : "rejected";
    status.textContent = text;
    const meta = document.createElement("div");
    meta.className = "muted";
    meta.textContent = `${o.quantity || ""} ticket(s) · order ${o.order_id}`;
    li.append(status, meta);
    return li;
  }));
  $("no-orders").hidden = state.orders.size > 0;
}

function subscribe(orderId) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ type: "subscribe", order_id: orderId }));
  }
}

function setConn(online, text) {
  const c = $("conn");
  c.className = online ? "online" : "offline";
  c.textContent = text;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws?access_token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  ws.onopen = () => {
    state.backoff = 500;
    setConn(true, "live");
    // Anything decided while we were away comes back through subscribe.
    for (const o of state.orders.values()) if (o.status === "pending") subscribe(o.order_id);
  };
  ws.onmessage = (m) => {
    const f = JSON.parse(m.data);
    if (f.type && f.type.startsWith("order.")) upsert(f);
  };
  ws.onclose = () => {
    setConn(false, navigator.onLine ? "reconnecting…" : "offline");
    setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 10000);
  };
}

window.addEventListener("offline", () => setConn(false, "offline"));
$("buy").addEventListener("submit", buy);
$("event").addEventListener("change", renderCategories);

(async () => {
  try {
    await signIn();
    await loadEvents();
    renderOrders();
    connect();
    // The stock shown refreshes every few seconds; while offline the last
    // copy stays and the header says so.
    setInterval(() => loadEvents().catch(() => setConn(false, "offline")), 5000);
  } catch (e) {
    $("message").textContent = e.message;
    setConn(false, "offline");
  }
})();
