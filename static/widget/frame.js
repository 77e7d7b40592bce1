/* The chat inside the widget's iframe: the visitor's conversation, live
 * answers over the widget socket, and the handoff to a person.
 *
 * The host page (embed.js) is reached by postMessage only, always with its
 * origin named and checked: it hands over the stored visitor token and the
 * identity in "init", and keeps the token that "welcome" returns. The
 * socket says hello with that token; after a reconnect the server replays
 * running answers from their start, so a pending answer's text is reset
 * and rebuilt, each event numbered so none is shown twice.
 */
(function () {
  "use strict";

  const NOTE_MS = 8000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const INIT_WAIT_MS = 5000;
  const HANDOFF_STATES = ["none", "requested", "active", "closed"];
  // A visitor asking for a human gets a button that offers one (in
  // English or Chinese: "a person", "customer service", "a real person").
  const WANTS_PERSON =
    /\b(humans?|person|agents?|representatives?|operators?|real people|someone real)\b|人工|客服|真人/i;

  const { el, setMarkdown } = window.ChatUI;

  const $ = (id) => document.getElementById(id);
  const els = {
    app: $("widget"),
    messages: $("messages"),
    status: $("status"),
    handoff: $("handoff"),
    close: $("close"),
    emailForm: $("email-form"),
    email: $("email"),
    emailError: $("email-error"),
    emailSend: $("email-send"),
    composer: $("composer"),
    input: $("input"),
    send: $("send"),
    mic: $("mic"),
    stop: $("stop"),
  };
  const config = JSON.parse($("widget-config").textContent);
  const hostOrigin =
    config.host_origin || new URLSearchParams(location.search).get("origin") || "";
  const embedded = window.parent !== window;
  const maxChars = Number(config.max_message_chars) || 0;

  const state = {
    started: false,
    connected: false,
    fatal: false,
    token: null,
    reportedToken: null, // what the host page has stored
    identity: null, // {user, signature} waiting to be verified
    identitySent: false,
    resetPending: false, // a reset the server has not seen yet
    revoke: null, // a forgotten token the next hello asks the server to revoke
    helloToken: null, // what the last hello said
    helloRevoke: null,
    conversation: null,
    messages: [], // ordered by id
    handoff: { state: "none", agent: null },
    handoffAsked: false,
    emailSent: null, // {client_id, email} until saved or refused
    hostOpen: true,
    unread: 0,
    wantFocus: false,
  };

  const view = window.ChatUI.scroller(els.messages, 80);
  const composer = window.ChatUI.composer(els.composer, els.input, {
    maxHeight: 128,
    onSend: sendFromComposer,
  });
  const streams = window.ChatStream.streams({
    notes: {
      queued: (frame) =>
        Number.isInteger(frame.position)
          ? interpolate(gettext("Waiting in line: position %(position)s"), { position: frame.position }, true)
          : gettext("Waiting in line…"),
      start: () => gettext("Writing…"),
    },
    render: (ids) =>
      view.follow(() => {
        for (const id of ids) {
          const node = nodeFor(id);
          const message = messageById(id);
          if (node && message) fillAnswer(node, message);
        }
      }),
  });

  // --- helpers ---------------------------------------------------------

  // Black or white, whichever contrasts more with the colour (WCAG
  // relative luminance).
  function textOn(hex) {
    const channel = (i) => {
      const c = parseInt(hex.slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    const lum = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? "#000000" : "#ffffff";
  }

  function applyColors() {
    const color = /^#[0-9a-f]{6}$/i.test(config.color || "") ? config.color : "#2f6feb";
    const root = document.documentElement.style;
    root.setProperty("--brand", color);
    root.setProperty("--on-brand", textOn(color));
  }

  // --- the host page -----------------------------------------------------

  function toHost(message) {
    if (!embedded || !hostOrigin) return;
    try {
      window.parent.postMessage(Object.assign({ chatWidget: 1 }, message), hostOrigin);
    } catch (_error) {
      /* not a valid origin: the server would have refused the page */
    }
  }

  function validIdentity(value) {
    return (
      !!value &&
      typeof value === "object" &&
      typeof value.user === "string" &&
      typeof value.signature === "string" &&
      value.user !== ""
    );
  }

  function onHostMessage(event) {
    if (event.source !== window.parent || event.origin !== hostOrigin) return;
    const data = event.data;
    if (!data || typeof data !== "object" || data.chatWidget !== 1) return;
    switch (data.type) {
      case "init": {
        const token = typeof data.token === "string" && data.token.length <= 1000 ? data.token : null;
        const revoke = typeof data.revoke === "string" && data.revoke.length <= 1000 ? data.revoke : null;
        start(token, validIdentity(data.identity) ? data.identity : null, revoke);
        return;
      }
      case "identify":
        if (validIdentity(data)) identify({ user: data.user, signature: data.signature });
        return;
      case "reset":
        resetVisitor();
        return;
      case "opened":
        state.hostOpen = true;
        if (state.unread) {
          // Hidden, the list could not scroll to what arrived meanwhile.
          view.toBottom(true);
          state.unread = 0;
          toHost({ type: "unread", count: 0 });
        }
        focusComposer();
        return;
      case "closed":
        state.hostOpen = false;
        return;
      default:
        return;
    }
  }

  function start(token, identity, revoke) {
    if (state.started) return;
    state.started = true;
    state.token = token;
    state.revoke = revoke;
    state.reportedToken = token;
    state.identity = identity;
    socket.connect();
  }

  function identify(identity) {
    state.identity = identity;
    state.identitySent = false;
    if (state.connected) sendIdentity();
  }

  function sendIdentity() {
    const { user, signature } = state.identity;
    state.identitySent = socket.send({ type: "identify", user, signature });
  }

  function resetVisitor() {
    // The host page has forgotten the token already.
    const forgotten = state.token;
    state.token = null;
    state.reportedToken = null;
    state.identity = null;
    state.identitySent = false;
    state.conversation = null;
    state.messages = [];
    streams.clear();
    socket.forgetActions();
    state.handoff = { state: "none", agent: null };
    state.handoffAsked = false;
    state.emailSent = null;
    state.unread = 0;
    els.emailForm.hidden = true;
    renderThread();
    // Without a connection, the next hello (with no token) starts afresh.
    state.resetPending = !socket.send({ type: "reset" });
    // Offline, the next hello names the forgotten token for the server to revoke.
    if (state.resetPending && forgotten) state.revoke = forgotten;
  }

  function focusComposer() {
    if (els.input.disabled) {
      state.wantFocus = true;
      els.messages.focus({ preventScroll: true });
    } else {
      state.wantFocus = false;
      els.input.focus({ preventScroll: true });
    }
  }

  // --- the socket ----------------------------------------------------------

  const query = `key=${encodeURIComponent(config.key)}&origin=${encodeURIComponent(hostOrigin)}`;
  // Dictation frames go to the dictation made below.
  let dictation = null;
  const dictationFrames = {};
  for (const type of ["dictation.started", "dictation.partial", "dictation.final", "dictation.error"]) {
    dictationFrames[type] = (frame) => {
      if (dictation) dictation.frames[type](frame);
    };
  }

  const connection = window.ChatStream.connection({
    path: `${config.ws_path || "/ws/widget/"}?${query}`,
    backoff: { minMs: BACKOFF_MIN_MS, maxMs: BACKOFF_MAX_MS, jitter: true },
    notes: {
      retrying: gettext("Reconnecting…"),
      closed: {
        4403: gettext("This chat is not available on this website."),
        4404: gettext("This chat is no longer available."),
      },
    },
    onStatus: setConnection,
    onOpen() {
      state.helloToken = state.token;
      state.helloRevoke = state.revoke;
      const hello = { type: "hello", token: state.token };
      if (state.revoke) hello.revoke = state.revoke;
      connection.send(hello);
    },
    streams,
    frames: {
      welcome: onWelcome,
      "message.accepted": onAccepted,
      "message.created": onCreated,
      "message.finished": (frame) => onFinished(frame.answer),
      "handoff.changed": (frame) => setHandoff(frame, true),
      "email.saved": onEmailSaved,
      error: onError,
      ...dictationFrames,
    },
    onClose(_event, final) {
      state.identitySent = false;
      if (final) state.fatal = true;
      setConnected(false);
    },
  });
  // Until the server welcomes the visitor, only hello and reset go out.
  const socket = Object.assign({}, connection, {
    send: (frame) => state.connected && connection.send(frame),
  });

  // --- status line -------------------------------------------------------

  let connectionNote = gettext("Connecting…");
  let flashNote = "";
  let flashTimer = null;

  function renderStatus() {
    const text = connectionNote || flashNote;
    els.status.textContent = text;
    els.status.hidden = !text;
    els.status.classList.toggle("problem", !!connectionNote || state.fatal);
  }

  function setConnection(text) {
    connectionNote = text;
    renderStatus();
  }

  function flash(text) {
    flashNote = text;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => {
      flashNote = "";
      renderStatus();
    }, NOTE_MS);
    renderStatus();
  }

  function setConnected(connected) {
    state.connected = connected;
    els.app.dataset.connected = connected ? "yes" : "no";
    els.input.disabled = !connected;
    els.send.disabled = !connected;
    els.mic.disabled = !connected;
    if (!connected && dictation && dictation.state !== "idle") dictation.cancel();
    els.stop.disabled = !connected;
    updateHandoffButton();
    if (connected) {
      setConnection("");
      if (state.wantFocus && state.hostOpen) focusComposer();
    }
  }

  // --- frames from the server ----------------------------------------------

  function validMessage(message) {
    return (
      !!message &&
      typeof message === "object" &&
      Number.isInteger(message.id) &&
      (message.role === "user" || message.role === "assistant")
    );
  }

  function onWelcome(frame) {
    socket.resetBackoff();
    if (state.resetPending) {
      state.resetPending = false;
      if (state.helloToken !== null) {
        // The hello went out before the reset: this is the forgotten
        // visitor; the answer to the reset is the welcome to show.
        connection.send({ type: "reset" });
        return;
      }
    }
    if (state.helloRevoke && state.helloRevoke === state.revoke) {
      state.revoke = null;
      toHost({ type: "revoked" });
    }
    if (typeof frame.token === "string" && frame.token) state.token = frame.token;
    if (state.token !== state.reportedToken) {
      state.reportedToken = state.token;
      toHost({ type: "token", token: state.token });
    }
    const thread = frame.conversation && typeof frame.conversation === "object" ? frame.conversation : null;
    state.conversation = thread && thread.conversation ? thread.conversation.id : null;
    state.messages = (thread && Array.isArray(thread.messages) ? thread.messages : [])
      .filter(validMessage)
      .sort((a, b) => a.id - b.id);
    // Running answers are streamed again from their start.
    streams.clear();
    for (const message of state.messages) {
      if (message.status === "pending") streams.ensure(message.id);
    }
    state.handoff = { state: "none", agent: null };
    setHandoff(Object.assign({ online: frame.online }, frame.handoff || {}), false);
    renderThread();
    setConnected(true);
    if (state.identity) {
      if (state.identitySent) {
        // This welcome answers the identify frame.
        state.identity = null;
        state.identitySent = false;
      } else {
        sendIdentity();
      }
    }
    socket.resendActions();
  }

  function onAccepted(frame) {
    const sent = socket.settle(frame.client_id);
    if (Number.isInteger(frame.conversation)) state.conversation = frame.conversation;
    const question = validMessage(frame.question) ? frame.question : null;
    if (question) placeMessage(question);
    if (validMessage(frame.answer)) placeMessage(frame.answer);
    if (sent && question) offerPersonIfAsked(question);
    updateComposer();
    view.toBottom(true);
  }

  function onCreated(frame) {
    if (Number.isInteger(frame.conversation)) state.conversation = frame.conversation;
    if (validMessage(frame.question)) placeMessage(frame.question);
    const answer = validMessage(frame.answer) ? frame.answer : null;
    if (answer) {
      const known = messageById(answer.id);
      placeMessage(answer);
      if (!known && answer.status !== "pending") countUnread(answer);
    }
    updateComposer();
    // A person's reply is what the visitor waits for: always show it.
    view.toBottom(!!(answer && answer.author));
  }

  function onFinished(answer) {
    if (!validMessage(answer)) return;
    streams.remove(answer.id);
    const index = state.messages.findIndex((m) => m.id === answer.id);
    const wasPending = index === -1 || state.messages[index].status === "pending";
    if (index === -1) placeMessage(answer);
    else {
      state.messages[index] = Object.assign({}, state.messages[index], answer);
      const node = nodeFor(answer.id);
      if (node) node.replaceWith(messageNode(state.messages[index]));
    }
    if (wasPending) countUnread(answer);
    updateComposer();
    view.toBottom(false);
  }

  function countUnread(answer) {
    if (state.hostOpen || answer.status === "cancelled") return;
    state.unread += 1;
    toHost({ type: "unread", count: state.unread });
  }

  function onError(frame) {
    composer.restore(socket.settle(frame.client_id)); // keep what the visitor wrote
    const text = typeof frame.error === "string" && frame.error ? frame.error : gettext("Something went wrong.");
    if (frame.code === "identity") {
      // The visitor stays anonymous; the host page's developer should know.
      state.identity = null;
      state.identitySent = false;
      console.warn(`Chat widget: ${text}`);
      return;
    }
    if (state.emailSent && frame.client_id === state.emailSent.client_id) {
      state.emailSent = null;
      showEmailForm(text);
      return;
    }
    flash(text);
    updateComposer();
  }

  // --- handoff -------------------------------------------------------------

  function setHandoff(frame, announce) {
    const next = HANDOFF_STATES.includes(frame.state) ? frame.state : state.handoff.state;
    const agent = typeof frame.agent === "string" && frame.agent ? frame.agent : null;
    const previous = state.handoff;
    state.handoff = { state: next, agent };
    if (announce && (next !== previous.state || agent !== previous.agent)) {
      if (next === "requested") addNote(gettext("Waiting for a person…"));
      else if (next === "active") {
        addNote(
          agent
            ? interpolate(gettext("%(name)s joined the conversation"), { name: agent }, true)
            : gettext("A person joined the conversation")
        );
      } else if (next === "closed") addNote(pgettext("a conversation with a person", "Closed"));
      else if (previous.state !== "none") addNote(gettext("The conversation is back with the assistant"));
    }
    if (announce && state.handoffAsked && frame.online === false && next !== "active") {
      state.handoffAsked = false;
      const away = typeof frame.offline_message === "string" && frame.offline_message;
      addNote(away || config.offline_message || gettext("Nobody is available right now."), "offline");
      showEmailForm("");
    } else if (next === "active") {
      state.handoffAsked = false;
    }
    updateHandoffButton();
  }

  function updateHandoffButton() {
    if (!els.handoff) return;
    const busy = state.handoff.state === "requested" || state.handoff.state === "active";
    els.handoff.hidden = busy;
    els.handoff.disabled = !state.connected;
  }

  function requestHandoff() {
    if (!socket.send({ type: "handoff.request" })) {
      flash(gettext("Not connected. Try again in a moment."));
      return;
    }
    state.handoffAsked = true;
    for (const offer of els.messages.querySelectorAll(".offer")) offer.remove();
  }

  function offerPersonIfAsked(question) {
    if (!WANTS_PERSON.test(question.content || "")) return;
    const node = nodeFor(question.id);
    if (node) offerPerson(node);
  }

  /* Offer a person under node, once, where the site has handoff. */
  function offerPerson(node) {
    if (!els.handoff || !node.parentNode) return;
    if (state.handoff.state === "requested" || state.handoff.state === "active") return;
    const next = node.nextElementSibling;
    if (next && next.classList.contains("offer")) return;
    const offer = el(
      "div",
      { class: "note offer", "data-testid": "widget-handoff-offer" },
      el("span", { text: gettext("Would you like to talk to a person?") }),
      el("button", {
        type: "button",
        class: "button small",
        "data-testid": "widget-handoff-offer-button",
        text: gettext("Talk to a person"),
        onclick: requestHandoff,
      })
    );
    node.after(offer);
  }

  function showEmailForm(error) {
    els.emailForm.hidden = false;
    els.emailSend.disabled = false;
    els.emailError.textContent = error;
    els.emailError.hidden = !error;
    els.email.setAttribute("aria-invalid", error ? "true" : "false");
    if (error) els.email.focus();
  }

  function leaveEmail(event) {
    event.preventDefault();
    const email = els.email.value.trim();
    els.email.value = email;
    if (!email || !els.email.checkValidity() || !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) {
      showEmailForm(gettext("Enter a valid email address, like name@example.com."));
      return;
    }
    const frame = { type: "email.leave", email, client_id: window.ChatStream.clientId() };
    if (!socket.send(frame)) {
      showEmailForm(gettext("Not connected. Try again in a moment."));
      return;
    }
    state.emailSent = { client_id: frame.client_id, email };
    els.emailSend.disabled = true;
  }

  function onEmailSaved() {
    els.emailSend.disabled = false;
    if (!state.emailSent) return;
    const { email } = state.emailSent;
    state.emailSent = null;
    els.emailForm.hidden = true;
    els.email.value = "";
    addNote(interpolate(gettext("Thank you! We will write to you at %(email)s."), { email }, true), "thanks");
    focusComposer();
  }

  // --- rendering -----------------------------------------------------------

  function messageById(id) {
    return state.messages.find((m) => m.id === id) || null;
  }

  function nodeFor(id) {
    return els.messages.querySelector(`.msg[data-message-id="${id}"]`);
  }

  function statusNote(message) {
    const stream = streams.get(message.id);
    switch (message.status) {
      case "pending":
        return (stream && stream.note) || (stream && stream.text ? "" : gettext("Waiting for an answer…"));
      case "cancelled":
        return gettext("Stopped");
      case "error":
        return message.error || gettext("The answer failed.");
      case "blocked":
        return gettext("Blocked by a content rule");
      default:
        return "";
    }
  }

  // --- voice ---------------------------------------------------------------

  const speech = config.speech || {};
  let dictationPrefix = "";
  els.mic.hidden = !(speech.dictation && window.ChatVoice.recordingFormat());
  dictation = window.ChatVoice.dictation({
    socket,
    language: () => document.documentElement.lang || "en",
    maxSeconds: speech.maxSeconds,
    sendOnPause: () => false,
    onState(next) {
      const on = next === "listening" || next === "starting";
      els.mic.classList.toggle("recording", on);
      els.mic.setAttribute("aria-pressed", on ? "true" : "false");
      els.mic.dataset.state = next;
    },
    onText(text) {
      const joiner = dictationPrefix && text && !/\s$/.test(dictationPrefix) ? " " : "";
      els.input.value = dictationPrefix + joiner + text;
      composer.autosize();
    },
    onError: (message) => flash(message),
  });
  els.mic.addEventListener("click", () => {
    if (dictation.state === "idle") {
      dictationPrefix = els.input.value;
      dictation.start();
    } else {
      dictation.stop();
    }
  });
  const reader = window.ChatVoice.reader({
    serverUrl: speech.synthesis ? "/widget/speech/say/" : null,
    serverBody: () => ({ key: config.key, token: state.token }),
    onError: (message) => flash(message),
  });

  function readButton(node) {
    if (!window.speechSynthesis && !speech.synthesis) return null;
    return el("button", {
      type: "button",
      class: "read-aloud",
      "data-testid": "widget-read-aloud",
      text: gettext("Read aloud"),
      onclick: () => {
        const text = node.querySelector(".bubble").innerText;
        reader.read(text, /[\u3400-\u9fff]/.test(text) ? "zh" : document.documentElement.lang || "en");
      },
    });
  }

  function fillAnswer(node, message) {
    const pending = message.status === "pending";
    const stream = streams.get(message.id);
    const text = pending ? (stream ? stream.text : "") : message.content || "";
    const bubble = node.querySelector(".bubble");
    setMarkdown(bubble, text);
    // An answer from the site's help articles links its citations to the
    // articles it was given; one the articles had nothing for offers a person.
    window.ChatUI.citations(bubble, message.knowledge, `wsrc-${message.id}-`);
    const oldCards = node.querySelector(".sources");
    if (oldCards) oldCards.remove();
    if (message.knowledge && message.knowledge.found) {
      const cards = window.ChatUI.sources(message.knowledge, `wsrc-${message.id}-`);
      if (cards) bubble.after(cards);
    }
    // (Once the node is in the list.)
    if (message.finish_reason === "no_passages") queueMicrotask(() => offerPerson(node));
    const note = node.querySelector(".msg-note");
    note.textContent = statusNote(message);
    note.hidden = !note.textContent;
    node.dataset.status = message.status;
    if (!pending && !node.querySelector(".read-aloud") && (message.content || "").trim()) {
      const button = readButton(node);
      if (button) note.before(button);
    }
    // Screen readers announce the answer once it is complete.
    node.setAttribute("aria-busy", pending ? "true" : "false");
    node.classList.toggle("streaming", pending);
    node.classList.toggle("failed", message.status === "error" || message.status === "blocked");
  }

  function messageNode(message) {
    if (message.role === "user") {
      return el(
        "div",
        { class: "msg user", "data-message-id": message.id, "data-testid": "widget-question" },
        el("div", { class: "bubble", text: message.content || "" })
      );
    }
    const author = typeof message.author === "string" && message.author ? message.author : "";
    const node = el(
      "div",
      {
        class: author ? "msg bot staff" : "msg bot",
        "data-message-id": message.id,
        "data-testid": "widget-answer",
        "data-status": message.status,
      },
      author
        ? el("p", { class: "author", "data-testid": "widget-author", text: `${author} (support)` })
        : null,
      el("div", { class: "bubble markdown" }),
      el("p", { class: "msg-note", hidden: true })
    );
    fillAnswer(node, message);
    return node;
  }

  function placeMessage(message) {
    const index = state.messages.findIndex((m) => m.id === message.id);
    if (index !== -1) return;
    const after = state.messages.findIndex((m) => m.id > message.id);
    if (after === -1) state.messages.push(message);
    else state.messages.splice(after, 0, message);
    if (message.status === "pending") streams.ensure(message.id);
    const node = messageNode(message);
    const next = after === -1 ? null : nodeFor(state.messages[after + 1].id);
    if (next) next.before(node);
    else els.messages.append(node);
    els.messages.classList.add("started");
  }

  function addNote(text, kind) {
    view.follow(() =>
      els.messages.append(
        el("p", { class: `note${kind ? ` ${kind}` : ""}`, "data-testid": "widget-note", text })
      )
    );
  }

  function greetingNodes() {
    const nodes = [];
    if (config.greeting) {
      const bubble = el("div", { class: "bubble markdown" });
      setMarkdown(bubble, config.greeting);
      nodes.push(el("div", { class: "msg bot greeting", "data-testid": "widget-greeting" }, bubble));
    }
    const suggestions = Array.isArray(config.suggestions) ? config.suggestions : [];
    if (suggestions.length) {
      const list = el("div", { class: "suggestions", role: "group", "aria-label": gettext("Suggested questions") });
      for (const text of suggestions.slice(0, 6)) {
        if (typeof text !== "string" || !text.trim()) continue;
        list.append(
          el("button", {
            type: "button",
            class: "suggestion",
            "data-testid": "widget-suggestion",
            text,
            onclick: () => sendMessage(text),
          })
        );
      }
      nodes.push(list);
    }
    return nodes;
  }

  function renderThread() {
    const fragment = document.createDocumentFragment();
    fragment.append(...greetingNodes());
    for (const message of state.messages) fragment.append(messageNode(message));
    els.messages.replaceChildren(fragment);
    els.messages.classList.toggle("started", state.messages.length > 0);
    if (window.ChatMarkdown) window.ChatMarkdown.enhance(els.messages);
    updateComposer();
    view.toBottom(true);
  }

  function runningAnswer() {
    for (let i = state.messages.length - 1; i >= 0; i -= 1) {
      const message = state.messages[i];
      if (message.role === "assistant" && message.status === "pending" && !message.author) {
        return message;
      }
    }
    return null;
  }

  function updateComposer() {
    const running = runningAnswer();
    els.stop.hidden = !running;
    els.send.hidden = !!running;
  }

  // --- actions -----------------------------------------------------------

  function sendMessage(content) {
    if (!content.trim()) return false;
    if (!state.connected) {
      flash(gettext("Not connected. Your message is kept; send it when the connection is back."));
      return false;
    }
    if (runningAnswer()) {
      flash(gettext("Wait for the answer to finish, or stop it, before sending."));
      return false;
    }
    if (maxChars && content.length > maxChars) {
      flash(
        interpolate(
          gettext("Messages are limited to %(count)s characters."),
          { count: maxChars.toLocaleString(document.documentElement.lang || undefined) },
          true
        )
      );
      return false;
    }
    socket.action({ type: "message.send", content });
    return true;
  }

  function sendFromComposer() {
    if (sendMessage(els.input.value)) {
      els.input.value = "";
      composer.autosize();
    }
  }

  function stopAnswer() {
    const running = runningAnswer();
    if (!running) return;
    if (socket.send({ type: "generation.stop", message: running.id })) {
      streams.setNote(running.id, gettext("Stopping…"));
    }
  }

  // --- wiring --------------------------------------------------------------

  applyColors();
  renderThread();
  renderStatus();

  els.stop.addEventListener("click", stopAnswer);
  els.close.addEventListener("click", () => toHost({ type: "close" }));
  if (els.handoff) els.handoff.addEventListener("click", requestHandoff);
  els.emailForm.addEventListener("submit", leaveEmail);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.defaultPrevented) toHost({ type: "close" });
  });
  window.addEventListener("message", onHostMessage);
  window.addEventListener("online", () => socket.reconnectNow());

  if (embedded) {
    toHost({ type: "ready" });
    // A host page that never answers (no embed.js) still gets a chat,
    // without a remembered visitor.
    setTimeout(() => start(null, null), INIT_WAIT_MS);
  } else {
    start(null, null);
  }
})();
