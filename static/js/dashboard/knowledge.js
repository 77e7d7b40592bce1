/* The knowledge test box's "Ask the production model": POST the question
 * tested and show the grounded answer as it streams (the compare page's
 * events), or the base's reply when nothing fits. */
(function () {
  "use strict";

  const box = document.querySelector("[data-testid=ask-model]");
  if (!box) return;
  const button = box.querySelector("[data-testid=ask-model-button]");
  const status = box.querySelector("[data-testid=ask-model-status]");
  const answer = box.querySelector("[data-testid=ask-model-answer]");

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function handle(event) {
    if (event.type === "start") {
      status.textContent = interpolate(gettext("Answering with %(model)s…"), { model: event.model_version }, true);
    }
    else if (event.type === "text") answer.textContent += event.text;
    else if (event.type === "done") {
      const figures = { reason: event.finish_reason, tokens: event.completion_tokens };
      status.textContent = event.tokens_per_s
        ? interpolate(
            gettext("Done (%(reason)s, %(tokens)s tokens, %(speed)s tokens/s)."),
            { ...figures, speed: event.tokens_per_s.toFixed(1) },
            true
          )
        : interpolate(gettext("Done (%(reason)s, %(tokens)s tokens)."), figures, true);
    } else if (event.type === "error") status.textContent = event.error;
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    answer.textContent = "";
    answer.hidden = false;
    status.textContent = gettext("Asking…");
    try {
      const response = await fetch(box.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream",
          "X-CSRFToken": csrfToken(),
        },
        body: JSON.stringify({ question: box.dataset.question }),
      });
      const type = response.headers.get("Content-Type") || "";
      if (type.startsWith("text/event-stream")) {
        await window.EventStream.read(response, handle);
      } else {
        const data = await response.json();
        if (data.found === false) {
          answer.textContent = data.reply;
          status.textContent = gettext("Nothing fits: the base's reply, without the model.");
        } else {
          answer.hidden = true;
          status.textContent = data.error || gettext("The question could not be asked.");
        }
      }
    } catch (err) {
      console.error(err);
      status.textContent = gettext("The connection failed.");
    } finally {
      button.disabled = false;
    }
  });
})();
