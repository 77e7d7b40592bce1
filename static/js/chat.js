/* The chat page: conversation list, the active path of the open
 * conversation, and live answers over one WebSocket.
 *
 * Answers stream as numbered events. The page remembers the last number it
 * showed for each running answer and asks for what follows after a
 * reconnect, so nothing is lost or shown twice. Actions carry a client_id;
 * re-sending one after a reconnect is a no-op on the server.
 */
(function () {
  "use strict";

  const BANNER_MS = 8000;
  // A deleted conversation can be brought back for this long.
  const UNDO_MS = 6000;
  const MAC = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);
  const { el, setMarkdown } = window.ChatUI;

  const $ = (id) => document.getElementById(id);
  const els = {
    app: $("chat-app"),
    sidebar: $("sidebar"),
    sidebarToggle: $("sidebar-toggle"),
    sidebarClose: $("sidebar-close"),
    backdrop: $("sidebar-backdrop"),
    modelPicker: $("model-picker"),
    modelPickerWrap: $("model-picker-wrap"),
    knowledgePicker: $("knowledge-picker"),
    knowledgePickerWrap: $("knowledge-picker-wrap"),
    toast: $("toast"),
    toastText: $("toast-text"),
    toastUndo: $("toast-undo"),
    shortcutsDialog: $("shortcuts-dialog"),
    list: $("conversation-list"),
    more: $("more"),
    search: $("search"),
    title: $("title"),
    headActions: $("head-actions"),
    openSettings: $("open-settings"),
    exportMd: $("export-md"),
    exportJson: $("export-json"),
    del: $("delete-conversation"),
    banner: $("banner"),
    messages: $("messages"),
    empty: $("empty"),
    composer: $("composer"),
    input: $("input"),
    send: $("send"),
    stop: $("stop"),
    connection: $("connection"),
    settingsDialog: $("settings-dialog"),
    settingsForm: $("settings-form"),
    settingsError: $("settings-error"),
    feedbackDialog: $("feedback-dialog"),
    feedbackForm: $("feedback-form"),
    temporaryToggle: $("temporary-toggle"),
    temporaryBadge: $("temporary-badge"),
    temporaryNote: $("temporary-note"),
  };
  const config = JSON.parse($("chat-config").textContent);
  const initial = JSON.parse($("chat-initial").textContent);

  const view = window.ChatUI.scroller(els.messages, 120);
  const composer = window.ChatUI.composer(els.composer, els.input, {
    maxHeight: 240,
    onSend: sendMessage,
  });
  const streams = window.ChatStream.streams({
    waiting: gettext("Waiting for the model…"),
    notes: {
      queued: (frame) => interpolate(gettext("Queued: position %(position)s"), { position: frame.position }, true),
      start: (frame) =>
        frame.model_version
          ? interpolate(gettext("Writing with %(model)s…"), { model: frame.model_version }, true)
          : gettext("Writing…"),
    },
    // A gap: ask for everything after the last number shown.
    onGap: openConversationOnSocket,
    render: renderStreams,
  });

  const state = {
    conversation: null, // {id, title, ...}
    path: [], // messages on the active path, root first
    streams,
    listPage: 1,
    listQuery: "",
    versions: [], // the model versions this person may pick
    pickedVersion: null, // the pick for a chat not created yet
    knowledgeBases: [], // the knowledge bases answers may be grounded in
    pickedKnowledge: null, // the base picked for a chat not created yet
    deleting: new Map(), // conversation id -> {timer, conversation}
    temporary: false, // the next chat is temporary (not kept, never trained on)
  };

  // --- helpers ---------------------------------------------------------

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function api(method, url, body) {
    const options = {
      method,
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      credentials: "same-origin",
    };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_err) {
      data = { error: interpolate(gettext("The server answered %(status)s."), { status: response.status }, true) };
    }
    if (!response.ok) {
      const error = new Error(
        (data && data.error) || interpolate(gettext("Request failed (%(status)s)"), { status: response.status }, true)
      );
      error.data = data;
      error.status = response.status;
      throw error;
    }
    return data;
  }

  let bannerTimer = null;
  function showError(message) {
    els.banner.textContent = message;
    els.banner.hidden = false;
    clearTimeout(bannerTimer);
    bannerTimer = setTimeout(() => {
      els.banner.hidden = true;
    }, BANNER_MS);
  }

  function copy(text, button) {
    const done = (ok) => {
      const before = button.textContent;
      button.textContent = ok ? gettext("Copied") : gettext("Copy failed");
      setTimeout(() => {
        button.textContent = before;
      }, 1500);
    };
    if (window.ChatMarkdown && window.ChatMarkdown.copyText) {
      window.ChatMarkdown.copyText(text).then(done, () => done(false));
    } else if (navigator.clipboard) {
      navigator.clipboard.writeText(text).then(() => done(true), () => done(false));
    }
  }

  // --- the socket ------------------------------------------------------

  const socket = window.ChatStream.connection({
    path: "/ws/chat/",
    backoff: { minMs: 500, maxMs: 8000, jitter: false },
    notes: {
      connecting: gettext("Connecting…"),
      retrying: gettext("Connection lost. Reconnecting…"),
      closed: {
        4401: gettext("Logged out. Log in again to chat."),
        // Reconnecting would be refused again until another tab closes.
        4429: gettext("Too many open connections: close another tab, then reload."),
      },
    },
    onStatus: setConnection,
    onOpen(reopened) {
      socket.resetBackoff();
      setConnection("");
      openConversationOnSocket();
      socket.resendActions();
      if (reopened) {
        // Back after a drop: what finished or changed meanwhile was
        // announced to nobody, so fetch it.
        reloadThread();
        scheduleListRefresh();
      }
    },
    streams,
    frames: {
      "message.accepted": onAccepted,
      "message.created": onCreated,
      "message.finished": (frame) => onFinished(frame.answer),
      "conversation.changed": (frame) => {
        if (state.conversation && frame.conversation === state.conversation.id) reloadThread();
      },
      "conversations.changed": scheduleListRefresh,
      error: onError,
      ...window.ChatPageVoice.frames,
    },
  });
  const voice = window.ChatPageVoice.attach({
    socket,
    input: els.input,
    autosize: () => composer.autosize(),
    send: sendMessage,
    showError,
    speech: config.speech,
  });

  function setConnection(text) {
    els.connection.textContent = text;
    els.app.dataset.connected = text ? "no" : "yes";
  }

  function openConversationOnSocket() {
    if (!state.conversation) return;
    socket.send({
      type: "conversation.open",
      conversation: state.conversation.id,
      after: streams.positions(),
    });
  }

  function action(frame) {
    if (!socket.action(frame)) setConnection(gettext("Offline: your message is sent when the connection is back."));
    return frame.client_id;
  }

  // --- frames from the server ---------------------------------------------

  function onError(frame) {
    composer.restore(socket.settle(frame.client_id)); // keep what the user wrote
    showError(frame.error || gettext("Something went wrong."));
    updateComposer();
  }

  function onAccepted(frame) {
    socket.settle(frame.client_id);
    if (!state.conversation || frame.conversation !== state.conversation.id) return;
    placeNewMessages(frame.question, frame.answer);
  }

  function onCreated(frame) {
    if (!state.conversation || frame.conversation !== state.conversation.id) return;
    placeNewMessages(frame.question, frame.answer);
  }

  function placeNewMessages(question, answer) {
    const index = state.path.findIndex((m) => m.id === answer.id);
    if (index !== -1) {
      // The same answer running again: it is being continued.
      if (answer.status === "pending" && state.path[index].status !== "pending") {
        const previous = state.path[index];
        state.path[index] = Object.assign({}, previous, answer, {
          siblings: previous.siblings,
          sibling_index: previous.sibling_index,
          rating: previous.rating,
        });
        streams.remove(answer.id);
        streams.ensure(answer.id);
        view.follow(() => replaceMessageNode(state.path[index]));
        updateComposer();
      }
      return;
    }
    const last = state.path[state.path.length - 1];
    const continues = question
      ? question.parent === (last ? last.id : null)
      : false;
    if (continues) {
      state.path.push(question, answer);
      streams.ensure(answer.id);
      renderThread();
      view.toBottom(true);
    } else {
      // An edit, a regenerated answer or a change made in another tab:
      // the server knows the new active path.
      streams.ensure(answer.id);
      reloadThread();
    }
  }

  function onFinished(answer) {
    streams.remove(answer.id);
    voice.answerText(answer.id, answer.content || "", true);
    const index = state.path.findIndex((m) => m.id === answer.id);
    if (index === -1) return;
    const previous = state.path[index];
    // The same end can be announced twice (by the worker and by this
    // page's socket): one that changes nothing leaves the page as it is,
    // so a reader's place and an open token view stay where they are.
    const same =
      ["status", "content", "finish_reason", "has_tokens", "model_version"].every(
        (key) => previous[key] === answer[key]
      ) && JSON.stringify(previous.knowledge) === JSON.stringify(answer.knowledge);
    if (same) return;
    state.path[index] = Object.assign({}, previous, answer, {
      siblings: previous.siblings,
      sibling_index: previous.sibling_index,
      rating: previous.rating,
    });
    // Its actions appear now: keep them in view when the reader was at
    // the end, not hidden below the composer.
    view.follow(() => replaceMessageNode(state.path[index]));
    updateComposer();
  }

  // --- rendering -------------------------------------------------------

  function renderStreams(ids) {
    const nearBottom = view.isNearBottom();
    for (const id of ids) {
      const node = els.messages.querySelector(`[data-message-id="${id}"]`);
      if (node) fillAnswerBody(node, state.path.find((m) => m.id === id));
      const stream = streams.get(id);
      if (stream) voice.answerText(id, stream.text, false);
    }
    // It was at the end before this text: keep it there, however much came.
    if (nearBottom) view.toBottom(true);
  }

  function statusLabel(message) {
    switch (message.status) {
      case "cancelled":
        return gettext("Stopped");
      case "error":
        return gettext("Error");
      case "blocked":
        return gettext("Blocked by a content rule");
      case "supplied":
        return gettext("Written by the API caller, not a model");
      default:
        return "";
    }
  }

  function fillAnswerBody(node, message) {
    if (!message) return;
    const body = node.querySelector(".msg-body");
    const note = node.querySelector(".msg-note");
    const stream = streams.get(message.id);
    const pending = message.status === "pending";
    // A continued answer shows what it had, then what streams.
    const text = pending ? (message.content || "") + (stream ? stream.text : "") : message.content;
    const tokens = !pending && tokenViewOpen.has(message.id) ? tokenCache.get(message.id) : null;
    body.classList.toggle("markdown", !tokens);
    if (tokens) TokenView.render(body, tokens);
    else {
      TokenView.unrender(body);
      setMarkdown(body, text);
      window.ChatUI.citations(body, message.knowledge, `src-${message.id}-`);
    }
    const cards = window.ChatUI.sources(message.knowledge, `src-${message.id}-`);
    const oldCards = node.querySelector(".sources");
    if (oldCards) oldCards.remove();
    if (cards) body.after(cards);
    node.classList.toggle("streaming", pending);
    let noteText = "";
    if (pending && stream) noteText = stream.note || "";
    else if (pending) noteText = gettext("Waiting for the model…");
    else if (message.status === "error") noteText = message.error || gettext("The answer failed.");
    else if (statusLabel(message)) noteText = statusLabel(message);
    note.textContent = noteText;
    note.hidden = !noteText;
    node.classList.toggle("failed", message.status === "error");
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function thumbIcon(down) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "14");
    svg.setAttribute("height", "14");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", down ? "thumb-icon down" : "thumb-icon");
    for (const d of ["M7 10v11H3V10z", "M7 10l4-8a3 3 0 0 1 3 3v4h5.5a2 2 0 0 1 2 2.3l-1.4 8A2 2 0 0 1 18.1 21H7"]) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.append(path);
    }
    return svg;
  }

  function versionSwitcher(message) {
    if (!message.siblings || message.siblings.length < 2) return null;
    const index = message.sibling_index;
    const total = message.siblings.length;
    return el(
      "span",
      { class: "versions", "data-testid": "versions" },
      el("button", {
        type: "button",
        class: "icon-button",
        "aria-label": gettext("Previous version"),
        "data-testid": "version-prev",
        disabled: index === 0,
        text: "‹",
        onclick: () => switchVersion(message.siblings[index - 1]),
      }),
      el("span", { class: "version-count", "data-testid": "version-count", text: `${index + 1} / ${total}` }),
      el("button", {
        type: "button",
        class: "icon-button",
        "aria-label": gettext("Next version"),
        "data-testid": "version-next",
        disabled: index === total - 1,
        text: "›",
        onclick: () => switchVersion(message.siblings[index + 1]),
      })
    );
  }

  function messageNode(message) {
    const isUser = message.role === "user";
    const body = el("div", { class: isUser ? "msg-body plain" : "msg-body markdown" });
    const node = el(
      "article",
      {
        class: `msg ${isUser ? "msg-user" : "msg-assistant"}`,
        "data-message-id": message.id,
        "data-testid": isUser ? "user-message" : "assistant-message",
        "data-status": message.status,
      },
      body,
      el("div", { class: "msg-note", "data-testid": "message-note", hidden: true })
    );
    const actions = el("div", { class: "msg-actions" });
    const switcher = versionSwitcher(message);
    if (switcher) actions.append(switcher);
    actions.append(
      el("button", {
        type: "button",
        class: "small-button",
        "data-testid": "copy-message",
        text: gettext("Copy"),
        onclick: (event) => copy(currentText(message), event.currentTarget),
      })
    );
    if (isUser) {
      body.textContent = message.content;
      actions.append(
        el("button", {
          type: "button",
          class: "small-button",
          "data-testid": "edit-message",
          text: gettext("Edit"),
          onclick: () => startEdit(node, message),
        })
      );
    } else {
      fillAnswerBody(node, message);
      if (body.classList.contains("token-text")) body.after(TokenView.legend());
      // A blocked question's notice and an API caller's own "answer" were
      // written by no model: nothing to regenerate or rate.
      const finished =
        message.status !== "pending" &&
        message.status !== "supplied" &&
        !(message.status === "blocked" && !message.model_version);
      if (finished) {
        actions.append(
          el("button", {
            type: "button",
            class: "small-button",
            "data-testid": "regenerate",
            text: gettext("Regenerate"),
            onclick: () => regenerate(message),
          })
        );
        if (continuable(message)) {
          actions.append(
            el("button", {
              type: "button",
              class: "small-button",
              "data-testid": "continue",
              title: gettext("Go on with this answer from where it stopped"),
              text: gettext("Continue"),
              onclick: () => continueAnswer(message),
            })
          );
        }
        if (message.has_tokens) actions.append(tokenViewButton(message));
        const readAloud = voice.readButton(() => node.querySelector(".msg-body").innerText);
        if (readAloud) actions.append(readAloud);
        actions.append(
          el(
            "span",
            { class: "rate-group" },
            el("button", {
              type: "button",
              class: `small-button thumb${message.rating === 1 ? " active" : ""}`,
              "aria-label": gettext("Good answer"),
              "aria-pressed": message.rating === 1 ? "true" : "false",
              "data-testid": "thumbs-up",
              onclick: () => rate(message, message.rating === 1 ? 0 : 1, ""),
            }, thumbIcon(false)),
            el("button", {
              type: "button",
              class: `small-button thumb${message.rating === -1 ? " active" : ""}`,
              "aria-label": gettext("Bad answer"),
              "aria-pressed": message.rating === -1 ? "true" : "false",
              "data-testid": "thumbs-down",
              onclick: () => (message.rating === -1 ? rate(message, 0, "") : askReason(message)),
            }, thumbIcon(true)),
            detailsButton(message)
          )
        );
      }
      if (message.model_version) {
        actions.append(el("span", { class: "model-label", "data-testid": "model-label", text: message.model_version }));
      }
    }
    node.append(actions);
    return node;
  }

  // --- per-answer details ---------------------------------------------------

  const FINISH_LABELS = {
    stop: gettext("ended on its own"),
    length: gettext("cut at the length limit"),
    cancelled: pgettext("an answer", "stopped"),
    content_filter: gettext("blocked by a content rule"),
    error: pgettext("an answer", "failed"),
    no_passages: gettext("nothing in the knowledge base answers it"),
  };

  const LANG = document.documentElement.lang || undefined;
  const number = (value, digits) =>
    value.toLocaleString(LANG, { minimumFractionDigits: digits, maximumFractionDigits: digits });

  function seconds(value) {
    if (typeof value !== "number" || !isFinite(value)) return null;
    return value < 1
      ? interpolate(gettext("%(n)s ms"), { n: number(Math.round(value * 1000), 0) }, true)
      : interpolate(gettext("%(n)s s"), { n: number(value, 2) }, true);
  }

  /* Rows of what is known about a finished answer: [label, value]. */
  function answerDetails(message) {
    const usage = message.usage || {};
    const t = message.timings || {};
    const rows = [];
    if (message.model_version) rows.push([gettext("Model"), message.model_version]);
    if (Number.isInteger(usage.completion_tokens)) {
      const counts = { answer: number(usage.completion_tokens, 0), prompt: number(usage.prompt_tokens || 0, 0) };
      rows.push([
        gettext("Tokens"),
        Number.isInteger(usage.prompt_tokens)
          ? interpolate(gettext("%(answer)s (prompt %(prompt)s)"), counts, true)
          : counts.answer,
      ]);
    }
    const ttft = typeof t.ttft_s === "number" ? t.ttft_s + (typeof t.claim_wait_s === "number" ? t.claim_wait_s : 0) : null;
    if (seconds(ttft)) rows.push([gettext("Time to first token"), seconds(ttft)]);
    let rate = null;
    if (typeof t.itl_mean_s === "number" && t.itl_mean_s > 0) rate = 1 / t.itl_mean_s;
    else if (Number.isInteger(usage.completion_tokens) && t.total_s > t.ttft_s) {
      rate = usage.completion_tokens / (t.total_s - t.ttft_s);
    }
    if (rate) rows.push([gettext("Speed"), interpolate(gettext("%(n)s tokens/s"), { n: number(rate, 1) }, true)]);
    if (seconds(t.total_s)) rows.push([gettext("Total time"), seconds(t.total_s)]);
    if (message.finish_reason) {
      rows.push([gettext("Finish"), FINISH_LABELS[message.finish_reason] || message.finish_reason]);
    }
    return rows;
  }

  function detailsButton(message) {
    const rows = answerDetails(message);
    if (!rows.length) return null;
    const panel = el(
      "div",
      { class: "msg-details", role: "tooltip", id: `details-${message.id}`, "data-testid": "answer-details" },
      el("dl", {}, ...rows.flatMap(([label, value]) => [el("dt", { text: label }), el("dd", { text: value })]))
    );
    const wrap = el("span", { class: "details-wrap" });
    const button = el("button", {
      type: "button",
      class: "small-button details-button",
      "aria-label": gettext("Answer details"),
      "aria-describedby": panel.id,
      "aria-expanded": "false",
      "data-testid": "details-button",
      text: "i",
      onclick: () => {
        const open = wrap.classList.toggle("open");
        button.setAttribute("aria-expanded", open ? "true" : "false");
      },
    });
    wrap.append(button, panel);
    return wrap;
  }

  // --- token probabilities --------------------------------------------------
  //
  // An answer shown as its tokens, each tinted by how likely the model
  // found it (js/token_view.js). A token's popover lists the alternatives
  // the model weighed there; picking one asks for a new version of the
  // answer that keeps the text before the token, takes the alternative and
  // goes on from it (message.branch).

  const TokenView = window.TokenView;
  const tokenCache = new Map(); // answer id -> its tokens, fetched once
  const tokenViewOpen = new Set(); // answers shown as tokens

  const tokenPopover = TokenView.popover({
    container: els.messages,
    context: tokenContext,
    pick: {
      mark: "↻",
      label: (text) => interpolate(gettext("Regenerate from here with “%(token)s”"), { token: text }, true),
      hint: gettext("↻ regenerates the answer from here with that token."),
      // What the server refuses (message_branch), said before it is sent.
      blocked({ tokens, index }, text) {
        const prefix = tokens.slice(0, index).map((t) => t.text).join("");
        if (!text || text.includes("\uFFFD")) return gettext("Part of a character: it cannot be picked alone.");
        if (!(prefix + text).trim()) return gettext("An answer cannot start with blank text.");
        return null;
      },
      run: ({ id, index }, text) => branchFrom(id, index, text),
    },
  });

  function tokenViewButton(message) {
    return TokenView.button({
      pressed: tokenViewOpen.has(message.id),
      className: "small-button",
      onClick: (event) => toggleTokenView(message.id, event.currentTarget),
    });
  }

  async function toggleTokenView(messageId, button) {
    tokenPopover.close(false);
    if (tokenViewOpen.has(messageId)) {
      tokenViewOpen.delete(messageId);
    } else {
      if (!tokenCache.has(messageId)) {
        button.disabled = true;
        button.setAttribute("aria-busy", "true");
        try {
          const data = await api("GET", `/api/messages/${messageId}/tokens/`);
          tokenCache.set(messageId, Array.isArray(data.tokens) ? data.tokens : []);
        } catch (error) {
          showError(error.message);
          return;
        } finally {
          button.disabled = false;
          button.removeAttribute("aria-busy");
        }
      }
      tokenViewOpen.add(messageId);
    }
    const message = state.path.find((m) => m.id === messageId);
    if (!message) return;
    replaceMessageNode(message);
    const again = els.messages.querySelector(`[data-message-id="${messageId}"] [data-testid="token-view-toggle"]`);
    if (again) again.focus();
  }

  /* The answer a token span belongs to, its tokens and the token's index. */
  function tokenContext(span) {
    const node = span.closest(".msg");
    const id = node ? Number(node.dataset.messageId) : NaN;
    const tokens = tokenCache.get(id);
    const index = Number(span.dataset.index);
    if (!tokens || !tokens[index]) return null;
    return { id, tokens, index };
  }

  function branchFrom(messageId, index, token) {
    if (runningAnswer()) {
      showError(gettext("Wait for the answer to finish, or stop it, first."));
      return;
    }
    tokenPopover.close(false);
    action({ type: "message.branch", message: messageId, index, token });
  }

  function continuable(message) {
    const last = state.path[state.path.length - 1];
    return (
      !!last &&
      last.id === message.id &&
      !message.author &&
      (message.finish_reason === "length" || message.finish_reason === "cancelled") &&
      !!(message.content || "").trim()
    );
  }

  function currentText(message) {
    const stream = streams.get(message.id);
    return message.status === "pending" && stream ? (message.content || "") + stream.text : message.content;
  }

  function replaceMessageNode(message) {
    const old = els.messages.querySelector(`[data-message-id="${message.id}"]`);
    if (old) old.replaceWith(messageNode(message));
    tokenPopover.check();
  }

  function renderThread() {
    const fragment = document.createDocumentFragment();
    for (const message of state.path) fragment.append(messageNode(message));
    for (const node of els.messages.querySelectorAll(".msg")) node.remove();
    els.messages.append(fragment);
    els.empty.hidden = state.path.length > 0;
    if (window.ChatMarkdown) window.ChatMarkdown.enhance(els.messages);
    tokenPopover.check();
    updateComposer();
  }

  function renderHeader() {
    const conversation = state.conversation;
    els.title.textContent = conversation ? conversation.title : gettext("New chat");
    document.title = `${conversation ? conversation.title : gettext("New chat")} · ${config.productName || gettext("Chat")}`;
    els.headActions.hidden = !conversation;
    if (conversation) {
      els.exportMd.href = `/api/conversations/${conversation.id}/export.md`;
      els.exportJson.href = `/api/conversations/${conversation.id}/export.json`;
    }
    for (const item of els.list.querySelectorAll("li[data-id]")) {
      item.classList.toggle("active", !!conversation && item.dataset.id === String(conversation.id));
    }
    const temporary = conversation ? !!conversation.temporary : state.temporary;
    els.temporaryToggle.hidden = !!conversation;
    els.temporaryToggle.setAttribute("aria-pressed", String(state.temporary));
    els.temporaryBadge.hidden = !(conversation && conversation.temporary);
    els.temporaryNote.hidden = !temporary;
    els.app.classList.toggle("is-temporary", temporary);
    renderPicker();
    renderKnowledgePicker();
  }

  // --- temporary chats ------------------------------------------------------

  // A temporary chat is not listed: its title (made from the first
  // question) comes from the conversation itself.
  async function refreshTemporaryTitle() {
    const conversation = state.conversation;
    try {
      const data = await api("GET", `/api/conversations/${conversation.id}/`);
      if (state.conversation !== conversation) return;
      conversation.title = data.conversation.title;
      renderHeader();
    } catch (_error) {
      /* ended meanwhile */
    }
  }

  // Leaving a temporary chat ends it: it is deleted, on the server too.
  function endTemporary(conversation, { leaving } = { leaving: false }) {
    if (!conversation || !conversation.temporary) return;
    fetch(`/api/conversations/${conversation.id}/`, {
      method: "DELETE",
      keepalive: leaving,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    }).catch(() => {
      /* the server deletes it after TEMPORARY_CHAT_HOURS anyway */
    });
  }

  function runningAnswer() {
    const last = state.path[state.path.length - 1];
    return last && last.role === "assistant" && last.status === "pending" ? last : null;
  }

  function updateComposer() {
    const running = runningAnswer();
    els.stop.hidden = !running;
    els.send.hidden = !!running;
  }

  // --- thread loading ----------------------------------------------------

  function applyThread(data, { scroll } = { scroll: false }) {
    state.conversation = data.conversation;
    state.path = data.messages;
    for (const message of state.path) {
      if (message.status === "pending") streams.ensure(message.id);
    }
    renderHeader();
    renderThread();
    if (scroll) view.toBottom(true);
  }

  let reloadToken = 0;
  async function reloadThread() {
    if (!state.conversation) return;
    const token = ++reloadToken;
    try {
      const data = await api("GET", `/api/conversations/${state.conversation.id}/`);
      if (token !== reloadToken) return;
      view.follow(() => applyThread(data));
    } catch (error) {
      if (error.status === 404) {
        showError(gettext("This conversation was deleted."));
        goToNewChat();
      }
    }
  }

  async function openConversation(id, { push } = { push: true }) {
    try {
      const data = await api("GET", `/api/conversations/${id}/`);
      if (state.conversation && state.conversation.id !== id) endTemporary(state.conversation);
      streams.clear();
      applyThread(data, { scroll: true });
      if (push) history.pushState({ conversation: id }, "", `/c/${id}/`);
      openConversationOnSocket();
      closeSidebar();
      els.input.focus();
    } catch (error) {
      showError(error.message);
    }
  }

  function goToNewChat(push = true) {
    endTemporary(state.conversation);
    state.temporary = false;
    state.conversation = null;
    state.path = [];
    streams.clear();
    renderHeader();
    renderThread();
    if (push) history.pushState({}, "", "/");
    els.input.focus();
  }

  // --- actions -----------------------------------------------------------

  async function sendMessage() {
    const content = els.input.value;
    if (!content.trim()) return;
    if (content.length > config.maxMessageChars) {
      showError(
        interpolate(
          gettext("Messages are limited to %(count)s characters."),
          { count: config.maxMessageChars.toLocaleString(LANG) },
          true
        )
      );
      return;
    }
    if (runningAnswer()) {
      showError(gettext("Wait for the answer to finish, or stop it, before sending."));
      return;
    }
    if (!state.conversation) {
      try {
        const created = await api(
          "POST",
          "/api/conversations/",
          Object.assign(
            {},
            state.pickedVersion ? { model_version: state.pickedVersion } : {},
            state.pickedKnowledge ? { knowledge_base: state.pickedKnowledge } : {},
            state.temporary ? { temporary: true } : {}
          )
        );
        state.temporary = false;
        state.pickedVersion = null;
        state.pickedKnowledge = null;
        state.conversation = created;
        history.pushState({ conversation: created.id }, "", `/c/${created.id}/`);
        renderHeader();
        openConversationOnSocket();
      } catch (error) {
        showError(error.message);
        return;
      }
    }
    els.input.value = "";
    composer.autosize();
    action({ type: "message.send", conversation: state.conversation.id, content });
  }

  function stopGeneration() {
    const running = runningAnswer();
    if (!running) return;
    socket.send({ type: "generation.stop", message: running.id });
    streams.setNote(running.id, gettext("Stopping…"));
  }

  function regenerate(message) {
    if (runningAnswer()) {
      showError(gettext("Wait for the answer to finish, or stop it, first."));
      return;
    }
    action({ type: "message.regenerate", message: message.id });
  }

  function continueAnswer(message) {
    if (runningAnswer()) {
      showError(gettext("Wait for the answer to finish, or stop it, first."));
      return;
    }
    action({ type: "message.continue", message: message.id });
  }

  function startEdit(node, message) {
    if (node.querySelector(".edit-box")) return;
    const area = el("textarea", { class: "edit-box", rows: 3, "data-testid": "edit-input" });
    area.value = message.content;
    const save = el("button", {
      type: "button",
      class: "button primary",
      "data-testid": "edit-save",
      text: gettext("Save & send"),
      onclick: () => {
        const content = area.value;
        if (!content.trim()) return;
        if (runningAnswer()) {
          showError(gettext("Wait for the answer to finish, or stop it, first."));
          return;
        }
        action({
          type: "message.send",
          conversation: state.conversation.id,
          content,
          parent: message.parent,
        });
        box.remove();
      },
    });
    const cancel = el("button", { type: "button", class: "button", text: gettext("Cancel"), onclick: () => box.remove() });
    const box = el("div", { class: "edit" }, area, el("div", { class: "edit-actions" }, cancel, save));
    node.append(box);
    area.focus();
  }

  async function switchVersion(messageId) {
    try {
      const data = await api("POST", `/api/conversations/${state.conversation.id}/branch/`, {
        message: messageId,
      });
      applyThread(data);
      openConversationOnSocket();
    } catch (error) {
      showError(error.message);
    }
  }

  async function rate(message, rating, reason) {
    try {
      const data = await api("POST", `/api/messages/${message.id}/feedback/`, { rating, reason });
      message.rating = data.rating;
      replaceMessageNode(message);
    } catch (error) {
      showError(error.message);
    }
  }

  let feedbackTarget = null;
  function askReason(message) {
    feedbackTarget = message;
    els.feedbackForm.reset();
    els.feedbackDialog.showModal();
  }

  // --- settings ------------------------------------------------------------

  const STRATEGY_HINTS = {
    sampling: gettext(
      "Each token is drawn at random by its probability. Top-k 0 leaves the choice open to every token."
    ),
    beam:
      gettext(
        "Follows the likeliest continuations and sends the best one whole when the search ends: no streaming and no token probabilities. Temperature, top p and top-k do not apply."
      ),
  };

  /* Show the fields of the picked strategy; hidden ones are disabled so
   * the browser does not check them. */
  function showStrategyFields() {
    const form = els.settingsForm;
    const strategy = form.strategy.value;
    for (const label of form.querySelectorAll("[data-strategy]")) {
      const shown = label.dataset.strategy === strategy;
      label.hidden = !shown;
      for (const input of label.querySelectorAll("input")) input.disabled = !shown;
    }
    $("strategy-hint").textContent = STRATEGY_HINTS[strategy] || "";
  }

  function settingsErrorShow(error) {
    els.settingsError.textContent = error.message;
    els.settingsError.hidden = false;
    const fields = (error.data && error.data.fields) || {};
    for (const name of Object.keys(fields)) {
      const input = els.settingsForm.elements.namedItem(name);
      if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
    }
  }

  function settingsErrorClear() {
    els.settingsError.hidden = true;
    for (const input of els.settingsForm.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  function openSettings() {
    const c = state.conversation;
    if (!c) return;
    const form = els.settingsForm;
    // An automatic title (made from the first message, maybe cut with
    // "…") is not put in the field: left empty, it stays automatic.
    form.title.value = c.title_is_auto ? "" : c.title;
    form.title.placeholder =
      c.title_is_auto && c.title !== gettext("New chat") ? c.title : gettext("Made from the first message");
    form.system_prompt.value = c.system_prompt;
    form.temperature.value = c.temperature;
    form.top_p.value = c.top_p;
    form.max_tokens.value = c.max_tokens;
    form.strategy.value = c.strategy === "beam" ? "beam" : "sampling";
    form.beams.value = c.beams;
    form.top_k.value = c.top_k;
    form.frequency_penalty.value = c.frequency_penalty;
    form.presence_penalty.value = c.presence_penalty;
    showStrategyFields();
    settingsErrorClear();
    els.settingsDialog.showModal();
  }

  async function saveSettings(event) {
    event.preventDefault();
    const form = els.settingsForm;
    const changes = {
      title: form.title.value,
      system_prompt: form.system_prompt.value,
      temperature: Number(form.temperature.value),
      top_p: Number(form.top_p.value),
      max_tokens: Number(form.max_tokens.value),
      strategy: form.strategy.value,
      frequency_penalty: Number(form.frequency_penalty.value),
      presence_penalty: Number(form.presence_penalty.value),
    };
    // Only the picked strategy's own field: the other one is not shown.
    if (changes.strategy === "beam") changes.beams = Number(form.beams.value);
    else changes.top_k = Number(form.top_k.value);
    settingsErrorClear();
    try {
      const data = await api("PATCH", `/api/conversations/${state.conversation.id}/`, changes);
      applyThread(data);
      els.settingsDialog.close();
    } catch (error) {
      settingsErrorShow(error);
    }
  }

  // --- deleting, with undo -------------------------------------------------

  let toastAction = null;
  let toastTimer = null;
  function showToast(text, undo) {
    els.toastText.textContent = text;
    els.toastUndo.hidden = !undo;
    toastAction = undo;
    els.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(hideToast, UNDO_MS);
  }
  function hideToast() {
    els.toast.hidden = true;
    toastAction = null;
  }

  function deleteNow(id) {
    const pending = state.deleting.get(id);
    if (!pending) return;
    clearTimeout(pending.timer);
    state.deleting.delete(id);
    api("DELETE", `/api/conversations/${id}/`).then(scheduleListRefresh, (error) => {
      if (error.status !== 404) showError(error.message);
      scheduleListRefresh();
    });
  }

  /* Take it off the list at once; delete it for real once the undo time
   * has passed (or the page is left). */
  function deleteConversation(conversation) {
    const target = conversation || state.conversation;
    if (!target || state.deleting.has(target.id)) return;
    const wasOpen = !!state.conversation && state.conversation.id === target.id;
    if (wasOpen) goToNewChat();
    state.deleting.set(target.id, {
      timer: setTimeout(() => deleteNow(target.id), UNDO_MS),
      conversation: target,
    });
    renderList();
    showToast(interpolate(gettext("Deleted “%(title)s”."), { title: target.title }, true), () => {
      const pending = state.deleting.get(target.id);
      if (!pending) return;
      clearTimeout(pending.timer);
      state.deleting.delete(target.id);
      renderList();
      if (wasOpen) openConversation(target.id);
      hideToast();
    });
  }

  window.addEventListener("pagehide", () => {
    endTemporary(state.conversation, { leaving: true });
    // Leaving the page ends the undo time: the deletions go through.
    for (const id of state.deleting.keys()) {
      fetch(`/api/conversations/${id}/`, {
        method: "DELETE",
        keepalive: true,
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      });
    }
    state.deleting.clear();
  });

  // --- the model picker ----------------------------------------------------

  async function loadVersions() {
    try {
      const data = await api("GET", "/api/versions/");
      state.versions = data.versions || [];
      state.knowledgeBases = data.knowledge_bases || [];
    } catch (_error) {
      state.versions = [];
      state.knowledgeBases = [];
    }
    renderPicker();
    renderKnowledgePicker();
  }

  /* Put options in a select only when they differ from what it holds: the
   * header is redrawn on every list change, and replacing the options
   * would close a list the reader has open. */
  function optionsSet(select, options) {
    const signature = (option) => `${option.value}\u0000${option.textContent}\u0000${option.title}`;
    const now = [...select.options].map(signature).join("\u0001");
    if (now === options.map(signature).join("\u0001")) return;
    select.replaceChildren(...options);
  }

  /* Which knowledge base answers are grounded in: none, or one offered. */
  function renderKnowledgePicker() {
    const bases = state.knowledgeBases;
    els.knowledgePickerWrap.hidden = bases.length === 0;
    if (!bases.length) return;
    const options = [el("option", { value: "", text: gettext("No knowledge base") })];
    for (const base of bases) {
      options.push(el("option", { value: String(base.id), text: base.name, title: base.description || null }));
    }
    optionsSet(els.knowledgePicker, options);
    const picked = state.conversation ? state.conversation.knowledge_base : state.pickedKnowledge;
    const known = picked && bases.some((b) => b.id === picked);
    els.knowledgePicker.value = known ? String(picked) : "";
  }

  async function pickKnowledge() {
    const value = els.knowledgePicker.value ? Number(els.knowledgePicker.value) : null;
    if (!state.conversation) {
      state.pickedKnowledge = value; // sent when the chat is created
      return;
    }
    try {
      const data = await api("PATCH", `/api/conversations/${state.conversation.id}/`, { knowledge_base: value });
      state.conversation = data.conversation;
    } catch (error) {
      showError(error.message);
    }
    renderKnowledgePicker();
  }

  function renderPicker() {
    const versions = state.versions;
    els.modelPickerWrap.hidden = versions.length === 0;
    if (!versions.length) return;
    const production = versions.find((v) => v.state === "production");
    const options = [
      el("option", {
        value: "",
        text: production
          ? interpolate(gettext("%(model)s (default)"), { model: production.name }, true)
          : gettext("Default model"),
      }),
    ];
    for (const version of versions) {
      if (production && version.id === production.id) continue;
      options.push(
        el("option", { value: String(version.id), text: `${version.name} · ${version.state_label || version.state}` })
      );
    }
    optionsSet(els.modelPicker, options);
    const picked = state.conversation ? state.conversation.model_version : state.pickedVersion;
    const known = picked && versions.some((v) => v.id === picked);
    els.modelPicker.value = known ? String(picked) : "";
    els.modelPicker.disabled = versions.length < 2;
    els.modelPicker.title =
      versions.length < 2 ? gettext("The model that answers here") : gettext("The model that answers in this conversation");
  }

  async function pickVersion() {
    const value = els.modelPicker.value ? Number(els.modelPicker.value) : null;
    if (!state.conversation) {
      state.pickedVersion = value; // sent when the chat is created
      return;
    }
    try {
      const data = await api("PATCH", `/api/conversations/${state.conversation.id}/`, { model_version: value });
      state.conversation = data.conversation;
      renderPicker();
    } catch (error) {
      showError(error.message);
      renderPicker();
    }
  }

  // --- conversation list -------------------------------------------------

  let listTimer = null;
  function scheduleListRefresh() {
    clearTimeout(listTimer);
    listTimer = setTimeout(refreshList, 300);
  }

  /* The group a conversation falls in by its last activity. */
  function dateGroup(iso, now) {
    const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
    const days = Math.round((day(now) - day(new Date(iso))) / 86400000);
    if (days <= 0) return gettext("Today");
    if (days === 1) return gettext("Yesterday");
    if (days < 7) return gettext("Previous 7 days");
    if (days < 30) return gettext("Previous 30 days");
    return new Intl.DateTimeFormat(LANG, { month: "long", year: "numeric" }).format(new Date(iso));
  }

  let listed = []; // the conversations shown, in order
  // While a title is being typed in the list, a refresh waits for it:
  // redrawing would take the field away mid-word.
  let renaming = false;
  let listStale = false;

  async function refreshList(append = false) {
    const page = append ? state.listPage + 1 : 1;
    const query = encodeURIComponent(state.listQuery);
    try {
      const data = await api("GET", `/api/conversations/?page=${page}&q=${query}`);
      state.listPage = data.page;
      listed = append ? listed.concat(data.results) : data.results;
      renderList();
      els.more.hidden = !data.has_next;
      const current = state.conversation && data.results.find((c) => c.id === state.conversation.id);
      if (current && !append) Object.assign(state.conversation, { title: current.title, title_is_auto: current.title_is_auto, pinned: current.pinned });
      if (!append && state.conversation && state.conversation.temporary) refreshTemporaryTitle();
      renderHeader();
    } catch (_error) {
      /* the next change notification retries */
    }
  }

  function renderList() {
    if (renaming) {
      listStale = true;
      return;
    }
    const now = new Date();
    const items = [];
    let group = null;
    const shown = listed.filter((c) => !state.deleting.has(c.id));
    for (const c of shown) {
      const name = c.pinned ? gettext("Pinned") : dateGroup(c.updated_at, now);
      if (name !== group) {
        group = name;
        items.push(el("li", { class: "list-group", "data-testid": "list-group", role: "presentation", text: name }));
      }
      items.push(listItem(c));
    }
    if (!shown.length) {
      items.push(el("li", { class: "muted small empty-list", text: state.listQuery ? gettext("Nothing found.") : gettext("No conversations yet.") }));
    }
    // A redraw (a title arriving, another tab's change) keeps an open
    // actions menu open, with the focus where it was.
    const openMenu = els.list.querySelector(".item-menu:not([hidden])");
    const openId = openMenu ? openMenu.closest("[data-id]").dataset.id : null;
    const focused = openMenu ? [...openMenu.querySelectorAll("button")].indexOf(document.activeElement) : -1;
    els.list.replaceChildren(...items);
    const item = openId === null ? null : els.list.querySelector(`[data-id="${CSS.escape(openId)}"]`);
    if (item) menuOpen(item, focused);
  }

  /* Open an item's actions menu, the focus on its button at index (none
   * when index is negative). */
  function menuOpen(item, index) {
    const menu = item.querySelector(".item-menu");
    menu.hidden = false;
    item.querySelector(".item-more").setAttribute("aria-expanded", "true");
    if (index >= 0) menu.querySelectorAll("button")[index].focus();
  }

  function listItem(c) {
    const link = el("a", { href: `/c/${c.id}/`, class: "item-link", text: c.title });
    link.addEventListener("click", (event) => {
      if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      openConversation(c.id);
    });
    const item = el("li", {
      "data-id": c.id,
      "data-testid": "conversation-item",
      class: c.pinned ? "pinned" : null,
    });
    if (state.conversation && state.conversation.id === c.id) item.classList.add("active");
    const menu = el(
      "div",
      { class: "item-menu", role: "menu", hidden: true },
      el("button", { type: "button", role: "menuitem", "data-testid": "item-rename", text: gettext("Rename"), onclick: () => { closeMenus(); startRename(item, c); } }),
      el("button", { type: "button", role: "menuitem", "data-testid": "item-pin", text: c.pinned ? gettext("Unpin") : gettext("Pin"), onclick: () => { closeMenus(); setPinned(c, !c.pinned); } }),
      el("button", { type: "button", role: "menuitem", class: "danger", "data-testid": "item-delete", text: gettext("Delete"), onclick: () => { closeMenus(); deleteConversation(c); } })
    );
    const toggle = el("button", {
      type: "button",
      class: "icon-button item-more",
      "aria-label": interpolate(gettext("Actions for %(title)s"), { title: c.title }, true),
      "aria-haspopup": "menu",
      "aria-expanded": "false",
      "data-testid": "item-more",
      text: "⋯",
      onclick: (event) => {
        event.stopPropagation();
        const open = menu.hidden;
        closeMenus();
        if (open) menuOpen(item, 0);
      },
    });
    if (c.pinned) item.append(pinIcon());
    item.append(link, toggle, menu);
    return item;
  }

  function pinIcon() {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "13");
    svg.setAttribute("height", "13");
    svg.setAttribute("class", "pin-mark");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", gettext("Pinned"));
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", "M9 3h6l-1 6 4 4H6l4-4zM12 13v8");
    svg.append(path);
    return svg;
  }

  function closeMenus() {
    for (const menu of els.list.querySelectorAll(".item-menu")) menu.hidden = true;
    for (const toggle of els.list.querySelectorAll(".item-more")) toggle.setAttribute("aria-expanded", "false");
  }

  function startRename(item, c) {
    const link = item.querySelector(".item-link");
    if (!link || item.querySelector(".rename-input")) return;
    const input = el("input", { class: "rename-input", maxlength: 200, "aria-label": gettext("New title"), "data-testid": "rename-input" });
    input.value = c.title_is_auto ? "" : c.title;
    input.placeholder = c.title;
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      input.replaceWith(link);
      renaming = false;
      if (listStale) {
        listStale = false;
        renderList();
      }
      if (!save || input.value.trim() === (c.title_is_auto ? "" : c.title)) return;
      try {
        const data = await api("PATCH", `/api/conversations/${c.id}/`, { title: input.value });
        c.title = data.conversation.title;
        c.title_is_auto = data.conversation.title_is_auto;
        link.textContent = c.title;
        if (state.conversation && state.conversation.id === c.id) {
          Object.assign(state.conversation, data.conversation);
          renderHeader();
        }
      } catch (error) {
        showError(error.message);
      }
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      else if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); finish(false); }
    });
    input.addEventListener("blur", () => finish(true));
    renaming = true;
    link.replaceWith(input);
    input.focus();
    input.select();
  }

  async function setPinned(c, pinned) {
    try {
      await api("PATCH", `/api/conversations/${c.id}/`, { pinned });
      refreshList();
    } catch (error) {
      showError(error.message);
    }
  }

  function sidebarIsDrawer() {
    return getComputedStyle(els.sidebarToggle).display !== "none";
  }

  function openSidebar() {
    els.app.classList.add("sidebar-open");
    els.sidebarToggle.setAttribute("aria-expanded", "true");
    els.backdrop.hidden = !sidebarIsDrawer();
    if (sidebarIsDrawer()) els.sidebarClose.focus();
  }

  function closeSidebar() {
    const wasOpen = els.app.classList.contains("sidebar-open");
    els.app.classList.remove("sidebar-open");
    els.sidebarToggle.setAttribute("aria-expanded", "false");
    els.backdrop.hidden = true;
    closeMenus();
    if (wasOpen && sidebarIsDrawer() && els.sidebar.contains(document.activeElement)) els.sidebarToggle.focus();
  }

  function toggleSidebar() {
    if (sidebarIsDrawer()) {
      if (els.app.classList.contains("sidebar-open")) closeSidebar();
      else openSidebar();
    } else {
      // On a wide screen the list is beside the chat: hide it or show it.
      els.app.classList.toggle("sidebar-hidden");
    }
  }

  // --- keyboard shortcuts ---------------------------------------------------

  function typing(target) {
    return !!target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function lastAnswer() {
    for (let i = state.path.length - 1; i >= 0; i--) {
      if (state.path[i].role === "assistant") return state.path[i];
    }
    return null;
  }

  function onShortcut(event) {
    const mod = MAC ? event.metaKey : event.ctrlKey;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (mod && event.shiftKey && key === "o") {
      event.preventDefault();
      goToNewChat();
      closeSidebar();
    } else if (mod && !event.shiftKey && key === "k") {
      event.preventDefault();
      if (sidebarIsDrawer()) openSidebar();
      else els.app.classList.remove("sidebar-hidden");
      els.search.focus();
      els.search.select();
    } else if (mod && event.shiftKey && key === "c") {
      const answer = lastAnswer();
      if (!answer) return;
      event.preventDefault();
      const node = els.messages.querySelector(`[data-message-id="${answer.id}"] [data-testid="copy-message"]`);
      if (node) copy(currentText(answer), node);
    } else if (mod && event.shiftKey && key === "s") {
      event.preventDefault();
      toggleSidebar();
    } else if (event.shiftKey && event.key === "Escape") {
      event.preventDefault();
      els.input.focus();
    } else if ((key === "?" && !mod && !typing(event.target)) || (mod && key === "/")) {
      event.preventDefault();
      if (!els.shortcutsDialog.open) els.shortcutsDialog.showModal();
    } else {
      return;
    }
  }

  // --- wiring --------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented) return;
    if (event.key === "Escape" && !event.shiftKey && !document.querySelector("dialog[open]")) {
      // Esc closes what is open over the chat first, then stops the answer.
      if (tokenPopover.escape()) {
        event.preventDefault();
        return;
      }
      if (els.list.querySelector(".item-menu:not([hidden])")) {
        event.preventDefault();
        closeMenus();
        return;
      }
      if (sidebarIsDrawer() && els.app.classList.contains("sidebar-open")) {
        event.preventDefault();
        closeSidebar();
        return;
      }
      if (runningAnswer()) {
        event.preventDefault();
        stopGeneration();
      }
      // And the voice: voice mode, a dictation, reading aloud.
      if (voice.stop()) event.preventDefault();
      return;
    }
    onShortcut(event);
  });
  document.addEventListener("click", (event) => {
    if (!event.target.closest(".item-menu, .item-more")) closeMenus();
    if (!event.target.closest(".details-wrap")) {
      for (const wrap of els.messages.querySelectorAll(".details-wrap.open")) {
        wrap.classList.remove("open");
        wrap.querySelector("button").setAttribute("aria-expanded", "false");
      }
    }
  });
  els.toastUndo.addEventListener("click", () => {
    if (toastAction) toastAction();
  });
  els.modelPicker.addEventListener("change", pickVersion);
  els.knowledgePicker.addEventListener("change", pickKnowledge);
  $("open-shortcuts").addEventListener("click", () => els.shortcutsDialog.showModal());
  $("shortcuts-close").addEventListener("click", () => els.shortcutsDialog.close());
  if (MAC) for (const key of els.shortcutsDialog.querySelectorAll("kbd[data-mod]")) key.textContent = "⌘";
  els.stop.addEventListener("click", stopGeneration);
  els.openSettings.addEventListener("click", openSettings);
  els.settingsForm.addEventListener("submit", saveSettings);
  els.settingsForm.strategy.addEventListener("change", showStrategyFields);
  $("settings-cancel").addEventListener("click", () => els.settingsDialog.close());
  els.feedbackForm.addEventListener("submit", (event) => {
    event.preventDefault();
    els.feedbackDialog.close();
    if (feedbackTarget) rate(feedbackTarget, -1, els.feedbackForm.reason.value);
  });
  $("feedback-cancel").addEventListener("click", () => els.feedbackDialog.close());
  els.del.addEventListener("click", () => deleteConversation());
  els.temporaryToggle.addEventListener("click", () => {
    state.temporary = !state.temporary;
    renderHeader();
    els.input.focus();
  });
  $("new-chat").addEventListener("click", (event) => {
    event.preventDefault();
    goToNewChat();
    closeSidebar();
  });
  els.more.addEventListener("click", () => refreshList(true));
  let searchTimer = null;
  els.search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.listQuery = els.search.value.trim();
      refreshList();
    }, 250);
  });
  els.sidebarToggle.addEventListener("click", toggleSidebar);
  els.sidebarClose.addEventListener("click", closeSidebar);
  els.backdrop.addEventListener("click", closeSidebar);
  window.addEventListener("popstate", () => {
    const match = location.pathname.match(/^\/c\/(\d+)\/$/);
    if (match) openConversation(Number(match[1]), { push: false });
    else goToNewChat(false);
  });

  if (initial) applyThread(initial, { scroll: true });
  else renderHeader();
  refreshList();
  loadVersions();
  socket.connect();
  els.input.focus();
  window.chatState = state; // for debugging from the console
})();
