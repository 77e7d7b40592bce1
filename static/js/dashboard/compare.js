/* The compare page's "Ask all" box: POST one question to compare-ask and
 * read the merged Server-Sent Events with fetch() and a ReadableStream
 * (EventSource cannot POST). Each event names its version; text goes into
 * that version's column as plain text, and "done" shows TTFT and tokens/s.
 * Stop aborts the request; the server then cancels the generations.
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
  const columns = new Map();
  document.querySelectorAll("[data-ask-version]").forEach((element) => {
    columns.set(Number(element.dataset.askVersion), {
      element,
      state: element.querySelector("[data-ask-state]"),
      output: element.querySelector("[data-ask-output]"),
      stats: element.querySelector("[data-ask-stats]"),
      finished: true,
    });
  });
  let controller = null;

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
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

  function columnsReset() {
    columns.forEach((column) => {
      column.element.classList.remove("error", "streaming");
      column.state.textContent = "Waiting for a worker…";
      column.output.textContent = "";
      column.stats.textContent = "";
      column.finished = false;
    });
  }

  function columnsUnfinished(text) {
    columns.forEach((column) => {
      if (column.finished) return;
      column.finished = true;
      column.element.classList.remove("streaming");
      column.state.textContent = text;
    });
  }

  function handle(event) {
    const column = columns.get(event.version);
    if (!column) return;
    if (event.type === "start") {
      column.element.classList.add("streaming");
      column.state.textContent = "Writing…";
    } else if (event.type === "text") {
      // Plain text only: the model's output is never parsed as HTML.
      column.output.append(document.createTextNode(event.text || ""));
      column.output.scrollTop = column.output.scrollHeight;
    } else if (event.type === "done") {
      column.finished = true;
      column.element.classList.remove("streaming");
      const reasons = { length: "Done (max tokens reached)", cancelled: "Stopped" };
      column.state.textContent = reasons[event.finish_reason] || "Done";
      const speed = event.tokens_per_s == null ? "–" : event.tokens_per_s.toFixed(1);
      const tokens = event.completion_tokens == null ? "–" : event.completion_tokens;
      column.stats.textContent =
        `TTFT ${seconds(event.ttft_s)} · ${speed} tokens/s · ${tokens} tokens`;
    } else if (event.type === "error") {
      column.finished = true;
      column.element.classList.remove("streaming");
      column.element.classList.add("error");
      column.state.textContent = `Error: ${event.error || "the generation failed"}`;
    }
  }

  async function read(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        let event;
        try {
          event = JSON.parse(data);
        } catch (_err) {
          continue;
        }
        if (event.type === "end") ended = true;
        else handle(event);
      }
    }
    return ended;
  }

  async function ask() {
    errorsClear();
    const question = form.elements.namedItem("question").value;
    if (!question.trim()) {
      errorShow("question", "Write a question.");
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
    status.textContent = "Asking…";
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
          errorShow(null, (data && data.error) || "The question could not be asked; reload the page.");
        }
        status.textContent = "";
        return;
      }
      const ended = await read(response);
      columnsUnfinished(ended ? "No answer" : "The stream was cut off.");
      status.textContent = ended ? "Done." : "The stream was cut off.";
    } catch (err) {
      if (err.name === "AbortError") {
        columnsUnfinished("Stopped");
        status.textContent = "Stopped.";
      } else {
        console.error(err);
        columnsUnfinished("The stream was cut off.");
        status.textContent = "The connection failed.";
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
})();
