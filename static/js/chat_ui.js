/* DOM helpers of the chat page (js/chat.js), the widget frame
 * (widget/frame.js) and the token view (js/token_view.js). Load it before
 * any of them.
 *
 * window.ChatUI = {
 *   el(tag, attrs, ...children) -> Element
 *   setMarkdown(node, text)             sanitized Markdown, else plain text
 *   scroller(box, nearPx) -> scroller   keeps a message list at its end
 *   composer(form, input, options)      Enter sends, the textarea grows
 *   citations(body, knowledge, prefix)  [n] marks -> links to source cards
 *   sources(knowledge, prefix) -> Element|null   an answer's source cards
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

  /* Only web addresses become links on source cards. */
  function safeUrl(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (error) {
      return null;
    }
  }

  const MARK = /\[(\d{1,3}(?:(?:\s*(?:,|and|&|;)\s*|\s+)\d{1,3})*)\]/g;

  /* In an answer grounded in passages (knowledge = Message.knowledge), make
   * each citation mark a link to its source card (ids prefix + n); marks of
   * numbers that were not given are dropped (the server removes them from
   * the stored text too). Code is left as it is. */
  function citations(body, knowledge, prefix) {
    const given = knowledge && knowledge.passages ? knowledge.passages.length : 0;
    if (!given) return;
    const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT, {
      acceptNode(node) {
        return node.parentElement.closest("code, pre, a")
          ? NodeFilter.FILTER_REJECT
          : NodeFilter.FILTER_ACCEPT;
      },
    });
    const nodes = [];
    const any = new RegExp(MARK.source); // no lastIndex to carry between texts
    while (walker.nextNode()) if (any.test(walker.currentNode.data)) nodes.push(walker.currentNode);
    for (const node of nodes) {
      const parts = [];
      let last = 0;
      node.data.replace(MARK, (match, inner, offset) => {
        const numbers = [...new Set(inner.match(/\d+/g).map(Number))].filter(
          (n) => n >= 1 && n <= given
        );
        const before = node.data.slice(last, offset);
        // A dropped mark takes the space before it along.
        parts.push(document.createTextNode(numbers.length ? before : before.replace(/\s+$/, "")));
        for (const n of numbers) {
          parts.push(
            el(
              "sup",
              { class: "cite" },
              el("a", {
                href: `#${prefix}${n}`,
                "data-testid": "citation",
                "aria-label": interpolate(gettext("Source %(n)s"), { n }, true),
                text: String(n),
              })
            )
          );
        }
        last = offset + match.length;
        return match;
      });
      parts.push(document.createTextNode(node.data.slice(last)));
      node.replaceWith(...parts);
    }
  }

  /* The source cards of a grounded answer, or a line saying the knowledge
   * base had nothing on the question; null for an answer without one. */
  function sources(knowledge, prefix) {
    if (!knowledge || !knowledge.base) return null;
    const box = el("section", { class: "sources", "data-testid": "sources" });
    const passages = knowledge.passages || [];
    if (!knowledge.found || !passages.length) {
      box.append(
        el("p", {
          class: "sources-none",
          text: knowledge.name
            ? interpolate(gettext("Nothing in %(name)s answers this."), { name: knowledge.name }, true)
            : gettext("Nothing in the knowledge base answers this."),
        })
      );
      return box;
    }
    const cited = new Set(knowledge.cited || []);
    box.append(el("h3", { class: "sources-title", text: gettext("Sources") }));
    const list = el("ol", { class: "source-cards" });
    for (const card of passages) {
      const url = card.url ? safeUrl(card.url) : null;
      const title = card.title || gettext("Untitled");
      const heading = (card.heading || "").split(" \u203a ").pop();
      list.append(
        el(
          "li",
          {
            class: cited.has(card.n) ? "source-card cited" : "source-card",
            id: `${prefix}${card.n}`,
            "data-testid": "source-card",
          },
          el("span", { class: "source-n", text: String(card.n) }),
          el(
            "div",
            { class: "source-text" },
            url
              ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: title })
              : el("strong", { text: title }),
            heading && heading !== title ? el("span", { class: "source-heading", text: heading }) : null,
            el("p", { class: "source-excerpt", text: card.excerpt || "" })
          )
        )
      );
    }
    box.append(list);
    return box;
  }

  window.ChatUI = Object.freeze({ el, setMarkdown, scroller, composer, citations, sources });
})();
