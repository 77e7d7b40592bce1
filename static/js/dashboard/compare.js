/* The compare page's "Ask all" box: POST one question to compare-ask and
 * read the merged Server-Sent Events with fetch() and a ReadableStream
 * (EventSource cannot POST). Each event names its version; text goes into
 * that version's column as plain text, and "done" shows TTFT and tokens/s.
 * Stop aborts the request; the server then cancels the generations.
 *
 * Text events carry the probabilities of the tokens they spell (OpenAI's
 * logprobs.content items). Once a column's answer has finished, its
 * "Token probabilities" toggle shows the answer as those tokens, with a
 * popover of the alternatives at each (js/token_view.js).
 */
(function () {
  "use strict";

  const configElement = document.getElementById("compare-config");
  const form = document.getElementById("ask-form");
  if (!configElement || !form) return;
  const config = JSON.parse(configElement.textContent);
  const submit = form.querySelector("[data-ask-submit]");
  const stop = form.querySelector("[data-ask-stop]");
  const status = form.querySelector("[data-ask-status]");
  const TokenView = window.TokenView;
  const columns = new Map();
  document.querySelectorAll("[data-ask-version]").forEach((element) => {
    const column = {
      element,
      state: element.querySelector("[data-ask-state]"),
      output: element.querySelector("[data-ask-output]"),
      stats: element.querySelector("[data-ask-stats]"),
      finished: true,
      text: "", // the answer as streamed
      logprobs: [], // its tokens' probabilities as streamed
      tokens: null, // those as TokenView tokens, while shown
      toggle: null,
      legend: null,
    };
    column.toggle = TokenView.button({ pressed: false, onClick: () => tokenViewToggle(column) });
    column.toggle.hidden = true;
    element.querySelector("[data-ask-tools]").append(column.toggle);
    columns.set(Number(element.dataset.askVersion), column);
  });
  const popover = TokenView.popover({
    container: form.closest(".ask-all"),
    context(span) {
      const element = span.closest("[data-ask-version]");
      const column = element && columns.get(Number(element.dataset.askVersion));
      return column && column.tokens ? { tokens: column.tokens, index: Number(span.dataset.index) } : null;
    },
  });
  let controller = null;

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    return value < 1
      ? interpolate(gettext("%(n)s ms"), { n: Math.round(value * 1000) }, true)
      : interpolate(gettext("%(n)s s"), { n: value.toFixed(2) }, true);
  }

  function errorsClear() {
    form.querySelectorAll(".errorlist.from-ask").forEach((list) => list.remove());
  }

  function errorShow(name, text) {
    const list = document.createElement("ul");
    list.className = "errorlist from-ask";
    const item = document.createElement("li");
    item.textContent = text;
    list.append(item);
    const input = name && form.elements.namedItem(name);
    const field = input && input.closest ? input.closest(".field") : null;
    if (field) field.append(list);
    else form.prepend(list);
  }

  /* Show the column's answer as its tokens (tokens), or as text (null). */
  function tokenViewShow(column, tokens) {
    popover.close(false);
    column.tokens = tokens;
    const shown = !!tokens;
    column.toggle.classList.toggle("active", shown);
    column.toggle.setAttribute("aria-pressed", shown ? "true" : "false");
    column.toggle.title = shown
      ? gettext("Token probabilities (click for the plain answer)")
      : gettext("Token probabilities");
    if (shown) {
      TokenView.render(column.output, tokens);
      if (!column.legend) {
        column.legend = TokenView.legend();
        column.output.after(column.legend);
      }
    } else {
      TokenView.unrender(column.output);
      column.output.textContent = column.text;
      if (column.legend) column.legend.remove();
      column.legend = null;
    }
  }

  function tokenViewToggle(column) {
    if (!column.finished) return;
    tokenViewShow(column, column.tokens ? null : TokenView.fromLogprobs(column.logprobs, column.text));
  }

  /* A finished answer with token probabilities can be shown as tokens. */
  function columnFinish(column) {
    column.finished = true;
    column.element.classList.remove("streaming");
    column.toggle.hidden = column.logprobs.length === 0;
  }

  function columnsReset() {
    columns.forEach((column) => {
      if (column.tokens) tokenViewShow(column, null);
      column.element.classList.remove("error", "streaming");
      column.state.textContent = gettext("Waiting for a worker…");
      column.output.textContent = "";
      column.stats.textContent = "";
      column.finished = false;
      column.text = "";
      column.logprobs = [];
      column.toggle.hidden = true;
    });
  }

  function columnsUnfinished(text) {
    columns.forEach((column) => {
      if (column.finished) return;
      columnFinish(column);
      column.state.textContent = text;
    });
  }

  function handle(event) {
    const column = columns.get(event.version);
    if (!column) return;
    if (event.type === "start") {
      column.element.classList.add("streaming");
      column.state.textContent = gettext("Writing…");
    } else if (event.type === "text") {
      // Plain text only: the model's output is never parsed as HTML.
      const text = typeof event.text === "string" ? event.text : "";
      column.text += text;
      if (Array.isArray(event.logprobs)) column.logprobs.push(...event.logprobs);
      column.output.append(document.createTextNode(text));
      column.output.scrollTop = column.output.scrollHeight;
    } else if (event.type === "done") {
      columnFinish(column);
      const reasons = { length: gettext("Done (max tokens reached)"), cancelled: gettext("Stopped") };
      column.state.textContent = reasons[event.finish_reason] || gettext("Done");
      const speed = event.tokens_per_s == null ? "–" : event.tokens_per_s.toFixed(1);
      const tokens = event.completion_tokens == null ? "–" : event.completion_tokens;
      column.stats.textContent = interpolate(
        gettext("TTFT %(ttft)s · %(speed)s tokens/s · %(tokens)s tokens"),
        { ttft: seconds(event.ttft_s), speed, tokens },
        true
      );
    } else if (event.type === "error") {
      columnFinish(column);
      column.element.classList.add("error");
      column.state.textContent = interpolate(
        gettext("Error: %(error)s"),
        { error: event.error || gettext("the generation failed") },
        true
      );
    }
  }

  async function ask() {
    errorsClear();
    const question = form.elements.namedItem("question").value;
    if (!question.trim()) {
      errorShow("question", gettext("Write a question."));
      return;
    }
    const maxTokens = form.elements.namedItem("max_tokens").value;
    const temperature = form.elements.namedItem("temperature").value;
    const body = {
      versions: config.versions.map((version) => version.id),
      question,
      system: form.elements.namedItem("system").value,
      max_tokens: maxTokens === "" ? null : Number(maxTokens),
      temperature: temperature === "" ? null : Number(temperature),
    };
    controller = new AbortController();
    submit.disabled = true;
    stop.hidden = false;
    status.textContent = gettext("Asking…");
    columnsReset();
    try {
      const response = await fetch(config.url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream",
          "X-CSRFToken": csrfToken(),
        },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        let data = null;
        try {
          data = await response.json();
        } catch (_err) {
          data = null;
        }
        columnsUnfinished("");
        if (data && data.errors) {
          Object.entries(data.errors).forEach(([name, texts]) => {
            texts.forEach((text) => errorShow(name === "versions" ? null : name, text));
          });
        } else {
          errorShow(null, (data && data.error) || gettext("The question could not be asked; reload the page."));
        }
        status.textContent = "";
        return;
      }
      const ended = await window.EventStream.read(response, handle);
      columnsUnfinished(ended ? gettext("No answer") : gettext("The stream was cut off."));
      status.textContent = ended ? gettext("Done.") : gettext("The stream was cut off.");
    } catch (err) {
      if (err.name === "AbortError") {
        columnsUnfinished(gettext("Stopped"));
        status.textContent = gettext("Stopped.");
      } else {
        console.error(err);
        columnsUnfinished(gettext("The stream was cut off."));
        status.textContent = gettext("The connection failed.");
      }
    } finally {
      controller = null;
      submit.disabled = false;
      stop.hidden = true;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!controller) ask();
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!controller) ask();
    }
  });
  stop.addEventListener("click", () => {
    if (controller) controller.abort();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.defaultPrevented && popover.escape()) event.preventDefault();
  });
})();
