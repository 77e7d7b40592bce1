/* Following a chat over its WebSocket, for the chat page (js/chat.js) and
 * the widget frame (widget/frame.js). Load it before either.
 *
 * window.ChatStream = {
 *   connection(options) -> socket   one socket to this site that pings
 *                                   while open, comes back after a drop
 *                                   with exponential backoff and stays
 *                                   closed after the codes it is told
 *   streams(options) -> streams     the running answers by message id:
 *                                   text, the last event number shown and
 *                                   a note; DOM updates at most every 50 ms
 *   clientId() -> string            a fresh client_id (a UUID)
 * }
 *
 * Answers arrive as numbered events. A number seen already is skipped, so
 * a replay shows nothing twice; generation.reset starts an answer over.
 * Actions sent with socket.action() carry a client_id and are kept until
 * the server accepts or refuses them, so they can be sent again after a
 * reconnect, where the server treats a repeat as a no-op.
 */
(function () {
  "use strict";

  const FLUSH_MS = 50; // at most ~20 DOM updates a second while streaming
  const PING_MS = 25000;

  function clientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /* A socket to options.path on this host.
   *
   * options:
   *   path                 the path and query string, e.g. "/ws/chat/"
   *   backoff              {minMs, maxMs, jitter}: the n-th retry in a row
   *                        waits min(maxMs, minMs * 2**n); with jitter, a
   *                        random time in the upper half of that
   *   notes                {connecting, retrying, closed: {code: text}}:
   *                        the connection line while a socket opens (none
   *                        when unset), while waiting to retry, and after
   *                        a close with one of the codes, which is final
   *   onStatus(text)       shows the connection line
   *   onOpen(reopened)     the socket is open; reopened after a drop
   *   streams              a streams() that takes its frames first
   *   frames               {type: handler(frame)}: the other frames
   *   onClose(event, final)  the socket closed; final when no retry follows
   *
   * Nothing happens until connect(). The caller resets the backoff once
   * the server has taken the connection (resetBackoff).
   */
  function connection(options) {
    const notes = options.notes;
    const pending = new Map(); // client_id -> frame, until accepted or refused
    let ws = null;
    let attempt = 0;
    let pingTimer = null;
    let retryTimer = null;
    let started = false;
    let opened = false;
    let ended = false;

    function send(frame) {
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify(frame));
        return true;
      }
      return false;
    }

    function retry() {
      options.onStatus(notes.retrying);
      const backoff = options.backoff;
      const ceiling = Math.min(backoff.maxMs, backoff.minMs * 2 ** attempt);
      attempt += 1;
      // With jitter, the clients of a restarted server do not all come back
      // at the same moment.
      const wait = backoff.jitter ? ceiling / 2 + (Math.random() * ceiling) / 2 : ceiling;
      retryTimer = setTimeout(connect, wait);
    }

    function connect() {
      clearTimeout(retryTimer);
      started = true;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      let socket;
      try {
        socket = new WebSocket(`${scheme}://${location.host}${options.path}`);
      } catch (_error) {
        retry();
        return;
      }
      ws = socket;
      if (notes.connecting) options.onStatus(notes.connecting);
      socket.addEventListener("open", () => {
        pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
        options.onOpen(opened);
        opened = true;
      });
      socket.addEventListener("message", (event) => {
        if (socket !== ws) return;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (_error) {
          return;
        }
        if (!frame || typeof frame !== "object") return;
        if (options.streams && options.streams.handle(frame)) return;
        if (Object.prototype.hasOwnProperty.call(options.frames, frame.type)) {
          options.frames[frame.type](frame);
        }
      });
      socket.addEventListener("close", (event) => {
        if (socket !== ws) return;
        clearInterval(pingTimer);
        ws = null;
        const closed = notes.closed || {};
        ended = Object.prototype.hasOwnProperty.call(closed, event.code);
        if (options.onClose) options.onClose(event, ended);
        if (ended) options.onStatus(closed[event.code]);
        else retry();
      });
    }

    /* Send binary data (dictation audio); false when the socket is not open. */
    function sendBinary(data) {
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(data);
        return true;
      }
      return false;
    }

    return {
      connect,
      send,
      sendBinary,
      /* Connect at once if a retry is waiting (the browser is back online). */
      reconnectNow() {
        if (!started || ws || ended) return;
        attempt = 0;
        connect();
      },
      resetBackoff() {
        attempt = 0;
      },
      /* Send a frame with a client_id and keep it until settle(). */
      action(frame) {
        frame.client_id = frame.client_id || clientId();
        pending.set(frame.client_id, frame);
        return send(frame);
      },
      /* Forget the action the server accepted or refused; return it. */
      settle(id) {
        const frame = pending.get(id) || null;
        pending.delete(id);
        return frame;
      },
      resendActions() {
        for (const frame of pending.values()) send(frame);
      },
      forgetActions() {
        pending.clear();
      },
    };
  }

  /* The running answers.
   *
   * options:
   *   waiting              the note of an answer with no event yet
   *   notes                {queued(frame), start(frame)}: the note for
   *                        those events
   *   onGap(frame)         called instead of showing an event that skips
   *                        numbers; without it such an event is shown
   *   render(ids)          redraws the answers whose stream changed
   *
   * handle(frame) takes the generation.* frames and returns whether it did.
   */
  function streams(options) {
    const byId = new Map(); // answer id -> {text, seq, note}
    const dirty = new Set(); // answer ids changed since the last render
    let flushTimer = null;
    let lastFlush = 0;

    function flush() {
      flushTimer = null;
      lastFlush = performance.now();
      options.render(dirty);
      dirty.clear();
    }

    function changed(id) {
      dirty.add(id);
      if (flushTimer) return;
      const wait = Math.max(0, FLUSH_MS - (performance.now() - lastFlush));
      flushTimer = setTimeout(flush, wait);
    }

    function ensure(id) {
      if (!byId.has(id)) byId.set(id, { text: "", seq: 0, note: options.waiting || "" });
      return byId.get(id);
    }

    function setNote(id, note) {
      ensure(id).note = note;
      changed(id);
    }

    function advance(frame) {
      if (!Number.isInteger(frame.message) || !Number.isInteger(frame.seq)) return;
      const stream = ensure(frame.message);
      if (frame.seq <= stream.seq) return; // shown already
      if (options.onGap && frame.seq > stream.seq + 1) {
        options.onGap(frame);
        return;
      }
      stream.seq = frame.seq;
      if (frame.type === "generation.text") {
        if (typeof frame.text !== "string") return;
        stream.text += frame.text;
        stream.note = "";
      } else if (frame.type === "generation.queued") {
        stream.note = options.notes.queued(frame);
      } else {
        stream.note = options.notes.start(frame);
      }
      changed(frame.message);
    }

    function handle(frame) {
      switch (frame.type) {
        case "generation.queued":
        case "generation.start":
        case "generation.text":
          advance(frame);
          return true;
        case "generation.waiting":
          if (Number.isInteger(frame.message) && typeof frame.reason === "string") {
            setNote(frame.message, frame.reason);
          }
          return true;
        case "generation.reset":
          // Events were lost in transit: the server replays from the start.
          if (Number.isInteger(frame.message)) {
            byId.set(frame.message, { text: "", seq: 0, note: "" });
            setNote(frame.message, typeof frame.reason === "string" ? frame.reason : "");
          }
          return true;
        default:
          return false;
      }
    }

    return {
      handle,
      ensure,
      setNote,
      get: (id) => byId.get(id),
      /* Forget a finished answer, and any redraw it was waiting for. */
      remove(id) {
        byId.delete(id);
        dirty.delete(id);
      },
      clear() {
        byId.clear();
        dirty.clear();
      },
      /* The last number shown of each answer, to resume after. */
      positions() {
        const after = {};
        for (const [id, stream] of byId) after[id] = stream.seq;
        return after;
      },
    };
  }

  window.ChatStream = Object.freeze({ connection, streams, clientId });
})();
