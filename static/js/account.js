/* The account page's data exports: while one is queued or being built,
 * ask the server how far it is every second and redraw the list, so the
 * progress bar moves and the download button appears when the archive is
 * ready. The server renders the first list; this only keeps it current.
 */
(function () {
  "use strict";

  const list = document.querySelector("[data-exports]");
  if (!list) return;
  const url = list.dataset.statusUrl;
  const startButton = document.querySelector("[data-testid=export-start]");
  const BUSY = ["queued", "running"];

  function item(exp) {
    const li = document.createElement("li");
    li.className = "export export-" + exp.state;
    li.dataset.export = String(exp.id);
    li.dataset.state = exp.state;
    const when = document.createElement("span");
    when.className = "export-when";
    const time = document.createElement("time");
    time.dateTime = exp.created_at;
    time.textContent = new Date(exp.created_at).toLocaleString();
    when.append(time);
    const state = document.createElement("span");
    state.className = "export-state";
    state.dataset.testid = "export-state";
    state.textContent = exp.state_label;
    li.append(when, state);
    if (BUSY.includes(exp.state)) {
      const done = (exp.progress && exp.progress.done) || 0;
      const total = (exp.progress && exp.progress.total) || 0;
      const bar = document.createElement("progress");
      bar.max = Math.max(total, 1);
      bar.value = done;
      bar.setAttribute("aria-label", gettext("Conversations written"));
      const text = document.createElement("span");
      text.className = "small muted";
      text.dataset.progress = "";
      text.textContent = interpolate(
        gettext("%(done)s of %(total)s conversations"),
        { done, total: total || "?" },
        true
      );
      li.append(bar, text);
    }
    if (exp.url) {
      const link = document.createElement("a");
      link.href = exp.url;
      link.className = "button";
      link.dataset.testid = "export-download";
      link.textContent = gettext("Download");
      if (exp.size_bytes) {
        const kb = (exp.size_bytes / 1024).toLocaleString(document.documentElement.lang || undefined, {
          maximumFractionDigits: 1,
        });
        link.title = interpolate(gettext("%(size)s KB"), { size: kb }, true);
      }
      li.append(link);
    }
    if (exp.error) {
      const error = document.createElement("span");
      error.className = "error small";
      error.textContent = exp.error;
      li.append(error);
    }
    return li;
  }

  function busy() {
    return Array.from(list.querySelectorAll("[data-state]")).some((li) =>
      BUSY.includes(li.dataset.state),
    );
  }

  async function refresh() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      list.replaceChildren(...body.exports.map(item));
      if (startButton) startButton.disabled = busy();
    } catch (_error) {
      /* offline for a moment: the next round tries again */
    }
  }

  async function follow() {
    while (busy()) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await refresh();
    }
  }

  follow();
})();
