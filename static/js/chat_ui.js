/* DOM helpers of the chat page (js/chat.js), the widget frame
 * (widget/frame.js) and the token view (js/token_view.js). Load it before
 * any of them.
 *
 * window.ChatUI = {
 *   el(tag, attrs, ...children) -> Element
 *   setMarkdown(node, text)             sanitized Markdown, else plain text
 *   scroller(box, nearPx) -> scroller   keeps a message list at its end
 *   composer(form, input, options)      Enter sends, the textarea grows
 * }
 */
(function () {
  "use strict";

  /* An element: attrs are set as attributes, except "text" (textContent)
   * and "on..." (listeners); null, undefined and false are left out. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // Sanitized HTML from ChatMarkdown only; plain text when it is missing.
  function setMarkdown(node, text) {
    if (window.ChatMarkdown) node.innerHTML = window.ChatMarkdown.render(text);
    else node.textContent = text;
  }

  /* box is "near the bottom" within nearPx of its end. */
  function scroller(box, nearPx) {
    return {
      isNearBottom() {
        return box.scrollHeight - box.scrollTop - box.clientHeight < nearPx;
      },
      toBottom(force) {
        if (force || this.isNearBottom()) box.scrollTop = box.scrollHeight;
      },
      /* Run change(); if the box was near its end before, go to the end. */
      follow(change) {
        const nearBottom = this.isNearBottom();
        change();
        if (nearBottom) this.toBottom(true);
      },
    };
  }

  /* Submitting form, or Enter without Shift in input, calls options.onSend;
   * input grows with its text up to options.maxHeight pixels. */
  function composer(form, input, options) {
    function autosize() {
      input.style.height = "auto";
      input.style.height = `${Math.min(input.scrollHeight, options.maxHeight)}px`;
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      options.onSend();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        options.onSend();
      }
    });
    input.addEventListener("input", autosize);
    return {
      autosize,
      /* Put a refused message back into an empty composer. */
      restore(sent) {
        if (sent && sent.type === "message.send" && !input.value) {
          input.value = sent.content;
          autosize();
        }
      },
    };
  }

  window.ChatUI = Object.freeze({ el, setMarkdown, scroller, composer });
})();
