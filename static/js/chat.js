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
  const { el, setMarkdown } = window.ChatUI;

  const $ = (id) => document.getElementById(id);
  const els = {
    app: $("chat-app"),
    sidebar: $("sidebar"),
    sidebarToggle: $("sidebar-toggle"),
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
  };
  const config = JSON.parse($("chat-config").textContent);
  const initial = JSON.parse($("chat-initial").textContent);

  const view = window.ChatUI.scroller(els.messages, 120);
  const composer = window.ChatUI.composer(els.composer, els.input, {
    maxHeight: 240,
    onSend: sendMessage,
  });
  const streams = window.ChatStream.streams({
    waiting: "Waiting for the model…",
    notes: {
      queued: (frame) => `Queued: position ${frame.position}`,
      start: (frame) => (frame.model_version ? `Writing with ${frame.model_version}…` : "Writing…"),
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
      data = { error: `The server answered ${response.status}.` };
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || `Request failed (${response.status})`);
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
      button.textContent = ok ? "Copied" : "Copy failed";
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
      connecting: "Connecting…",
      retrying: "Connection lost. Reconnecting…",
      closed: {
        4401: "Logged out. Log in again to chat.",
        // Reconnecting would be refused again until another tab closes.
        4429: "Too many open connections: close another tab, then reload.",
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
    },
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
    if (!socket.action(frame)) setConnection("Offline: your message is sent when the connection is back.");
    return frame.client_id;
  }

  // --- frames from the server ---------------------------------------------

  function onError(frame) {
    composer.restore(socket.settle(frame.client_id)); // keep what the user wrote
    showError(frame.error || "Something went wrong.");
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
    if (state.path.some((m) => m.id === answer.id)) return;
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
    const index = state.path.findIndex((m) => m.id === answer.id);
    if (index === -1) return;
    const previous = state.path[index];
    state.path[index] = Object.assign({}, previous, answer, {
      siblings: previous.siblings,
      sibling_index: previous.sibling_index,
      rating: previous.rating,
    });
    replaceMessageNode(state.path[index]);
    updateComposer();
  }

  // --- rendering -------------------------------------------------------

  function renderStreams(ids) {
    const nearBottom = view.isNearBottom();
    for (const id of ids) {
      const node = els.messages.querySelector(`[data-message-id="${id}"]`);
      if (node) fillAnswerBody(node, state.path.find((m) => m.id === id));
    }
    if (nearBottom) view.toBottom(false);
  }

  function statusLabel(message) {
    switch (message.status) {
      case "cancelled":
        return "Stopped";
      case "error":
        return "Error";
      case "blocked":
        return "Blocked by a content rule";
      case "supplied":
        return "Written by the API caller, not a model";
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
    const text = pending ? (stream ? stream.text : "") : message.content;
    setMarkdown(body, text);
    node.classList.toggle("streaming", pending);
    let noteText = "";
    if (pending && stream) noteText = stream.note || "";
    else if (pending) noteText = "Waiting for the model…";
    else if (message.status === "error") noteText = message.error || "The answer failed.";
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
        "aria-label": "Previous version",
        "data-testid": "version-prev",
        disabled: index === 0,
        text: "‹",
        onclick: () => switchVersion(message.siblings[index - 1]),
      }),
      el("span", { class: "version-count", "data-testid": "version-count", text: `${index + 1} / ${total}` }),
      el("button", {
        type: "button",
        class: "icon-button",
        "aria-label": "Next version",
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
        text: "Copy",
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
          text: "Edit",
          onclick: () => startEdit(node, message),
        })
      );
    } else {
      fillAnswerBody(node, message);
      // A blocked question's notice and an API caller's own "answer" were
      // written by no model: nothing to regenerate or rate.
      const finished =
        message.status !== "pending" &&
        message.status !== "supplied" &&
        !(message.status === "blocked" && !message.model_version);
      if (message.model_version) {
        actions.append(el("span", { class: "model-label", "data-testid": "model-label", text: message.model_version }));
      }
      if (finished) {
        actions.append(
          el("button", {
            type: "button",
            class: "small-button",
            "data-testid": "regenerate",
            text: "Regenerate",
            onclick: () => regenerate(message),
          }),
          el("button", {
            type: "button",
            class: `small-button thumb${message.rating === 1 ? " active" : ""}`,
            "aria-label": "Good answer",
            "aria-pressed": message.rating === 1 ? "true" : "false",
            "data-testid": "thumbs-up",
            onclick: () => rate(message, message.rating === 1 ? 0 : 1, ""),
          }, thumbIcon(false)),
          el("button", {
            type: "button",
            class: `small-button thumb${message.rating === -1 ? " active" : ""}`,
            "aria-label": "Bad answer",
            "aria-pressed": message.rating === -1 ? "true" : "false",
            "data-testid": "thumbs-down",
            onclick: () => (message.rating === -1 ? rate(message, 0, "") : askReason(message)),
          }, thumbIcon(true))
        );
      }
    }
    node.append(actions);
    return node;
  }

  function currentText(message) {
    const stream = streams.get(message.id);
    return message.status === "pending" && stream ? stream.text : message.content;
  }

  function replaceMessageNode(message) {
    const old = els.messages.querySelector(`[data-message-id="${message.id}"]`);
    if (old) old.replaceWith(messageNode(message));
  }

  function renderThread() {
    const fragment = document.createDocumentFragment();
    for (const message of state.path) fragment.append(messageNode(message));
    for (const node of els.messages.querySelectorAll(".msg")) node.remove();
    els.messages.append(fragment);
    els.empty.hidden = state.path.length > 0;
    if (window.ChatMarkdown) window.ChatMarkdown.enhance(els.messages);
    updateComposer();
  }

  function renderHeader() {
    const conversation = state.conversation;
    els.title.textContent = conversation ? conversation.title : "New chat";
    document.title = `${conversation ? conversation.title : "New chat"} · Chat`;
    els.headActions.hidden = !conversation;
    if (conversation) {
      els.exportMd.href = `/api/conversations/${conversation.id}/export.md`;
      els.exportJson.href = `/api/conversations/${conversation.id}/export.json`;
    }
    for (const item of els.list.querySelectorAll("li")) {
      item.classList.toggle("active", !!conversation && item.dataset.id === String(conversation.id));
    }
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
        showError("This conversation was deleted.");
        goToNewChat();
      }
    }
  }

  async function openConversation(id, { push } = { push: true }) {
    try {
      const data = await api("GET", `/api/conversations/${id}/`);
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
      showError(`Messages are limited to ${config.maxMessageChars.toLocaleString()} characters.`);
      return;
    }
    if (runningAnswer()) {
      showError("Wait for the answer to finish, or stop it, before sending.");
      return;
    }
    if (!state.conversation) {
      try {
        const created = await api("POST", "/api/conversations/", {});
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
    streams.setNote(running.id, "Stopping…");
  }

  function regenerate(message) {
    if (runningAnswer()) {
      showError("Wait for the answer to finish, or stop it, first.");
      return;
    }
    action({ type: "message.regenerate", message: message.id });
  }

  function startEdit(node, message) {
    if (node.querySelector(".edit-box")) return;
    const area = el("textarea", { class: "edit-box", rows: 3, "data-testid": "edit-input" });
    area.value = message.content;
    const save = el("button", {
      type: "button",
      class: "button primary",
      "data-testid": "edit-save",
      text: "Save & send",
      onclick: () => {
        const content = area.value;
        if (!content.trim()) return;
        if (runningAnswer()) {
          showError("Wait for the answer to finish, or stop it, first.");
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
    const cancel = el("button", { type: "button", class: "button", text: "Cancel", onclick: () => box.remove() });
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

  function openSettings() {
    const c = state.conversation;
    if (!c) return;
    const form = els.settingsForm;
    form.title.value = c.title === "New chat" ? "" : c.title;
    form.system_prompt.value = c.system_prompt;
    form.temperature.value = c.temperature;
    form.top_p.value = c.top_p;
    form.max_tokens.value = c.max_tokens;
    els.settingsError.hidden = true;
    els.settingsDialog.showModal();
  }

  async function saveSettings(event) {
    event.preventDefault();
    const form = els.settingsForm;
    try {
      const data = await api("PATCH", `/api/conversations/${state.conversation.id}/`, {
        title: form.title.value,
        system_prompt: form.system_prompt.value,
        temperature: Number(form.temperature.value),
        top_p: Number(form.top_p.value),
        max_tokens: Number(form.max_tokens.value),
      });
      applyThread(data);
      els.settingsDialog.close();
    } catch (error) {
      els.settingsError.textContent = error.message;
      els.settingsError.hidden = false;
    }
  }

  async function deleteConversation() {
    if (!state.conversation) return;
    if (!confirm(`Delete “${state.conversation.title}”? This cannot be undone.`)) return;
    try {
      await api("DELETE", `/api/conversations/${state.conversation.id}/`);
      goToNewChat();
      refreshList();
    } catch (error) {
      showError(error.message);
    }
  }

  // --- conversation list -------------------------------------------------

  let listTimer = null;
  function scheduleListRefresh() {
    clearTimeout(listTimer);
    listTimer = setTimeout(refreshList, 300);
  }

  async function refreshList(append = false) {
    const page = append ? state.listPage + 1 : 1;
    const query = encodeURIComponent(state.listQuery);
    try {
      const data = await api("GET", `/api/conversations/?page=${page}&q=${query}`);
      if (!append) els.list.replaceChildren();
      state.listPage = data.page;
      for (const c of data.results) {
        const link = el("a", { href: `/c/${c.id}/`, text: c.title });
        link.addEventListener("click", (event) => {
          if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
          event.preventDefault();
          openConversation(c.id);
        });
        els.list.append(el("li", { "data-id": c.id, "data-testid": "conversation-item" }, link));
      }
      if (!els.list.children.length) {
        els.list.append(
          el("li", { class: "muted small empty-list", text: state.listQuery ? "Nothing found." : "No conversations yet." })
        );
      }
      els.more.hidden = !data.has_next;
      const current = state.conversation && data.results.find((c) => c.id === state.conversation.id);
      if (current && !append) state.conversation.title = current.title;
      renderHeader();
    } catch (_error) {
      /* the next change notification retries */
    }
  }

  function closeSidebar() {
    els.app.classList.remove("sidebar-open");
    els.sidebarToggle.setAttribute("aria-expanded", "false");
  }

  // --- wiring --------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !document.querySelector("dialog[open]") && runningAnswer()) {
      event.preventDefault();
      stopGeneration();
    }
  });
  els.stop.addEventListener("click", stopGeneration);
  els.openSettings.addEventListener("click", openSettings);
  els.settingsForm.addEventListener("submit", saveSettings);
  $("settings-cancel").addEventListener("click", () => els.settingsDialog.close());
  els.feedbackForm.addEventListener("submit", (event) => {
    event.preventDefault();
    els.feedbackDialog.close();
    if (feedbackTarget) rate(feedbackTarget, -1, els.feedbackForm.reason.value);
  });
  $("feedback-cancel").addEventListener("click", () => els.feedbackDialog.close());
  els.del.addEventListener("click", deleteConversation);
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
  els.sidebarToggle.addEventListener("click", () => {
    const open = els.app.classList.toggle("sidebar-open");
    els.sidebarToggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
  window.addEventListener("popstate", () => {
    const match = location.pathname.match(/^\/c\/(\d+)\/$/);
    if (match) openConversation(Number(match[1]), { push: false });
    else goToNewChat(false);
  });

  if (initial) applyThread(initial, { scroll: true });
  else renderHeader();
  refreshList();
  socket.connect();
  els.input.focus();
  window.chatState = state; // for debugging from the console
})();
