/* The dashboard's live channel: one socket to /ws/dashboard/ that
 * subscribes to topics ("jobs", "job.<id>", "versions", "usage") and calls
 * handlers with each notification's payload. It reconnects with backoff
 * and subscribes again; pages re-read their figures on "reconnected",
 * since notifications sent while it was away are not replayed.
 *
 *   DashboardSocket.on("job.5", (payload) => ...);
 *   DashboardSocket.on("reconnected", () => refresh());
 *
 * Every dashboard page loads it, so it also carries the small helpers the
 * page scripts share: throttle (re-read at most once per interval) and el
 * (build DOM nodes without innerHTML).
 */
(function () {
  "use strict";
  const handlers = new Map();
  let socket = null;
  let attempts = 0;
  let everOpen = false;

  function topics() {
    return [...handlers.keys()].filter((t) => t !== "reconnected" && t !== "status");
  }
  function emit(topic, payload) {
    (handlers.get(topic) || []).forEach((fn) => {
      try { fn(payload); } catch (err) { console.error(err); }
    });
  }
  function subscribe() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "subscribe", topics: topics() }));
    }
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/dashboard/`);
    socket.addEventListener("open", () => {
      attempts = 0;
      subscribe();
      emit("status", { connected: true });
      if (everOpen) emit("reconnected", {});
      everOpen = true;
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (_err) { return; }
      if (frame.type === "event") emit(frame.topic, frame.payload || {});
    });
    socket.addEventListener("close", (event) => {
      emit("status", { connected: false });
      // Signed out, not staff, or too many sockets open: retrying would not help.
      if (event.code === 4401 || event.code === 4403 || event.code === 4429) return;
      attempts += 1;
      const delay = Math.min(30000, 500 * 2 ** Math.min(attempts, 6)) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    });
  }

  /* Call an async fn at most once per `wait` ms however often the returned
   * function is called: the first call runs at once, later ones fold into
   * one trailing run, and runs never overlap. For pages that re-read their
   * figures on notifications. */
  function throttle(fn, wait) {
    let last = 0;
    let timer = null;
    let running = false;
    let again = false;
    async function run() {
      if (running) { again = true; return; }
      running = true;
      last = Date.now();
      try {
        await fn();
      } catch (err) {
        console.error(err);
      } finally {
        running = false;
        if (again) { again = false; schedule(); }
      }
    }
    function schedule() {
      if (timer) return;
      timer = setTimeout(() => { timer = null; run(); }, Math.max(0, last + wait - Date.now()));
    }
    return schedule;
  }

  /* Build an element: el("p", {class: "x"}, "text", childNode, ...).
   * Attributes that are null, undefined or false are left out; children
   * that are not nodes become text nodes, never markup. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  window.DashboardSocket = {
    el,
    throttle,
    on(topic, fn) {
      if (!handlers.has(topic)) handlers.set(topic, []);
      handlers.get(topic).push(fn);
      if (!socket) connect(); else subscribe();
    },
  };
})();
