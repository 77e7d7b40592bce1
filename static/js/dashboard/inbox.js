/* The inbox: the list reads its rows again when the dashboard socket's
 * "inbox" topic says something changed (at most once a second, and once a
 * minute for the waiting times); a conversation shows the visitor's
 * messages and the assistant's answers as they come ("conversation.<id>"),
 * redraws its side panel when the handoff changes, and sends replies
 * without leaving the page.
 *
 * Message text is set with textContent only: what visitors write never
 * passes through innerHTML. Fragments the server renders (escaped by
 * its templates) are parsed with DOMParser and moved in as nodes.
 */
(function () {
  "use strict";

  // --- helpers -------------------------------------------------------------

  const { el, throttle } = DashboardSocket;

  /* The children of a server-rendered fragment, as nodes. */
  async function fetchFragment(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      cache: "no-store",
    });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    return [...doc.body.childNodes];
  }

  const pad = (n) => String(n).padStart(2, "0");
  function localTime(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return iso;
    return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ` +
      `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
  }

  function showLive(indicator) {
    if (!indicator) return;
    DashboardSocket.on("status", (status) => {
      indicator.hidden = false;
      indicator.textContent = status.connected ? gettext("● live") : gettext("○ reconnecting…");
      indicator.classList.toggle("on", !!status.connected);
    });
  }

  // Forms that ask first (closing, taking over); the side panel is redrawn,
  // so the listener sits on the document.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // --- the list ----------------------------------------------------------------

  function inboxList(root) {
    const box = root.querySelector("[data-inbox-rows]");
    const baseTitle = document.title;
    function showCount() {
      const counts = box.querySelector("[data-counts]");
      const waiting = counts ? Number(counts.dataset.requested) : 0;
      document.title = waiting ? `(${waiting}) ${baseTitle}` : baseTitle;
    }
    const refresh = throttle(async () => {
      box.replaceChildren(...(await fetchFragment(root.dataset.fragmentUrl)));
      showCount();
    }, 1000);
    DashboardSocket.on("inbox", refresh);
    DashboardSocket.on("reconnected", refresh);
    // Waiting times grow without any event.
    setInterval(refresh, 60000);
    showLive(root.querySelector("[data-live]") || document.querySelector("[data-live]"));
    showCount();
  }

  // --- one conversation --------------------------------------------------------

  const STATUS_LABEL = {
    pending: gettext("Generating"),
    cancelled: gettext("Stopped"),
    error: gettext("Error"),
    blocked: gettext("Blocked"),
  };

  function messageNode(data) {
    const head = el("header", { class: "inbox-msg-head" });
    if (data.role === "user") {
      head.append(el("strong", {}, gettext("Visitor")));
    } else if (data.author) {
      head.append(el("strong", {}, data.author), " ", el("span", { class: "badge" }, gettext("staff")));
    } else {
      head.append(el("strong", {}, gettext("Assistant")));
      if (data.model_version) head.append(" ", el("span", { class: "small muted" }, data.model_version));
    }
    if (data.status !== "done") {
      const kind = data.status === "pending" ? "running" : "error";
      head.append(" ", el("span", { class: `badge ${kind}`, "data-status-badge": "" },
        STATUS_LABEL[data.status] || data.status));
    }
    head.append(" ", el("time", { class: "small muted", datetime: data.created_at }, localTime(data.created_at)));
    const classes = ["inbox-msg", `role-${data.role}`];
    if (data.author) classes.push("by-staff");
    return el(
      "article",
      { class: classes.join(" "), "data-message": data.id, "data-status": data.status },
      head,
      el("div", { class: "inbox-msg-body" }, data.content || ""),
    );
  }

  function conversationPage(root) {
    const config = JSON.parse(document.getElementById("inbox-live").textContent);
    const thread = root.querySelector("[data-thread]");
    const side = root.querySelector("[data-side]");
    const form = root.querySelector("[data-reply-form]");
    const hint = root.querySelector("[data-reply-hint]");
    const errorBox = form.querySelector("[data-reply-error]");
    const textarea = form.querySelector("textarea");
    const button = form.querySelector('button[type="submit"]');
    const pageUrl = config.page_url;

    function localizeTimes(scope) {
      scope.querySelectorAll("time[datetime]").forEach((node) => {
        if (node.closest(".inbox-msg")) node.textContent = localTime(node.getAttribute("datetime"));
      });
    }
    function nearBottom() {
      return thread.scrollHeight - thread.scrollTop - thread.clientHeight < 80;
    }
    function toBottom() { thread.scrollTop = thread.scrollHeight; }

    /* Add a message, or replace the one with its id (a finished answer). */
    function upsert(data, { scroll = false } = {}) {
      if (!data || data.id === undefined) return;
      const follow = scroll || nearBottom();
      const node = messageNode(data);
      const existing = thread.querySelector(`[data-message="${Number(data.id)}"]`);
      if (existing) {
        existing.replaceWith(node);
      } else {
        const empty = thread.querySelector("[data-thread-empty]");
        if (empty) empty.remove();
        thread.append(node);
      }
      if (follow) toBottom();
    }

    function applyState() {
      const panel = side.querySelector("[data-state]");
      const mine = panel && panel.dataset.mine === "1";
      form.hidden = !mine;
      if (hint) hint.hidden = mine;
    }

    const refreshSide = throttle(async () => {
      side.replaceChildren(...(await fetchFragment(`${pageUrl}?fragment=side`)));
      applyState();
    }, 500);
    const refreshThread = throttle(async () => {
      const follow = nearBottom();
      thread.replaceChildren(...(await fetchFragment(`${pageUrl}?fragment=thread`)));
      localizeTimes(thread);
      if (follow) toBottom();
    }, 1000);

    DashboardSocket.on(`conversation.${config.conversation}`, (payload) => {
      if (payload.type === "message.created") {
        upsert(payload.question);
        upsert(payload.answer);
      } else if (payload.type === "message.finished") {
        upsert(payload.answer);
      } else if (payload.type === "handoff.changed") {
        refreshSide();
      }
    });
    // An email left, or a change seen from the list: the side panel.
    DashboardSocket.on("inbox", (payload) => {
      if (Number(payload.conversation) === Number(config.conversation)) refreshSide();
    });
    DashboardSocket.on("reconnected", () => { refreshThread(); refreshSide(); });
    showLive(document.querySelector("[data-live]"));

    // --- replying ---
    function showError(text) {
      errorBox.textContent = text || "";
      errorBox.hidden = !text;
    }
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    textarea.addEventListener("input", () => showError(""));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!textarea.value.trim()) {
        showError(gettext("Write a reply first."));
        return;
      }
      button.disabled = true;
      try {
        const response = await fetch(form.action, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            Accept: "application/json",
            "X-CSRFToken": form.querySelector('input[name="csrfmiddlewaretoken"]').value,
          },
          body: new URLSearchParams(new FormData(form)),
        });
        let data = null;
        try { data = await response.json(); } catch (err) { data = null; }
        if (response.ok && data && data.message) {
          upsert(data.message, { scroll: true });
          textarea.value = "";
          showError("");
        } else {
          showError(
            (data && data.error) ||
              interpolate(gettext("The reply was not sent (%(status)s)."), { status: response.status }, true)
          );
          if (response.status === 409) refreshSide();
        }
      } catch (err) {
        showError(gettext("The reply was not sent: the server cannot be reached."));
      } finally {
        button.disabled = false;
        textarea.focus();
      }
    });

    localizeTimes(thread);
    toBottom();
    applyState();
  }

  const list = document.querySelector("[data-inbox]");
  if (list) inboxList(list);
  const page = document.querySelector("[data-inbox-conversation]");
  if (page) conversationPage(page);
})();
