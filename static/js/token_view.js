/* The token view of an answer, shared by the chat page (js/chat.js) and
 * the dashboard's compare page (js/dashboard/compare.js): the answer as
 * its tokens, each tinted by how likely the model found it, and a popover
 * listing the alternatives the model weighed at a token, opened by the
 * mouse resting on the token, a click or tap, or Enter (the arrow keys
 * move between tokens; Esc closes it, by escape()). Load js/chat_ui.js
 * before it; the look is css/token_view.css. Model text only ever goes in
 * through textContent.
 *
 * A token is {text, logprob, top: [{text, logprob, chosen?}], end?}: the
 * text it adds to the answer, its log-probability and the most likely
 * tokens there. chosen marks the alternative that is the token itself
 * (without it, the one with the same text is); end marks a token that
 * ended the answer and spells none of it.
 *
 * window.TokenView = {
 *   BUCKETS                           the tints, most likely first
 *   percent(logprob) -> "12.3%"
 *   fromLogprobs(entries, text)       OpenAI logprobs.content items as tokens
 *   button({pressed, onClick, className})  the "Token probabilities" toggle
 *   render(body, tokens)              one focusable span per token
 *   unrender(body)                    body is no token view any more
 *   legend() -> Element               the key to the tints
 *   popover(options) -> popover       see popover() below
 * }
 */
(function () {
  "use strict";

  const { el } = window.ChatUI;
  const SVG_NS = "http://www.w3.org/2000/svg";

  // Lowest probability of each tint, most likely first.
  const BUCKETS = Object.freeze([
    { min: 0.9, tint: "p-high", label: gettext("90% and up") },
    { min: 0.5, tint: "p-mid", label: "50–90%" },
    { min: 0.2, tint: "p-low", label: "20–50%" },
    { min: 0, tint: "p-rare", label: gettext("under 20%") },
  ]);
  const HOVER_OPEN_MS = 120;
  const HOVER_CLOSE_MS = 250;
  const canHover = window.matchMedia("(hover: hover) and (pointer: fine)");

  function probability(logprob) {
    const p = typeof logprob === "number" ? Math.exp(logprob) : 0;
    return isFinite(p) ? Math.min(Math.max(p, 0), 1) : 0;
  }

  function percent(logprob) {
    const value = probability(logprob) * 100;
    if (value > 0 && value < 0.1) return "<0.1%";
    return `${value >= 99.95 ? 100 : value.toFixed(1)}%`;
  }

  function bucket(logprob) {
    const p = probability(logprob);
    return BUCKETS.find((b) => p >= b.min);
  }

  /* Whitespace made visible, for a token standing on its own. */
  function shown(text) {
    return text.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥");
  }

  /* A token's name for a screen reader. */
  function spoken(token) {
    const text = String(token.text);
    if (token.end) return interpolate(gettext("End of the answer, %(token)s"), { token: text }, true);
    if (!text) return gettext("Part of a character");
    return text.trim() ? text : shown(text);
  }

  function sameBytes(a, b) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => x === b[i]);
  }

  /* OpenAI's logprobs.content items ({token, logprob, bytes, top_logprobs})
   * as tokens. Each token's text is what its bytes add to the answer: a
   * piece of a character adds nothing until the character is whole, so
   * the texts spell the answer where the item's token would show U+FFFD.
   * Tokens after the ones that spell text (the answer's text as streamed)
   * are marked end: an end-of-turn token, say. */
  function fromLogprobs(entries, text) {
    const decoder = new TextDecoder();
    const tokens = [];
    for (const entry of Array.isArray(entries) ? entries : []) {
      if (!entry || typeof entry !== "object") continue;
      let own;
      if (Array.isArray(entry.bytes)) own = decoder.decode(Uint8Array.from(entry.bytes), { stream: true });
      else own = decoder.decode() + String(entry.token ?? "");
      const top = (Array.isArray(entry.top_logprobs) ? entry.top_logprobs : []).map((alt) => ({
        text: String(alt.token ?? ""),
        logprob: alt.logprob,
        chosen: Array.isArray(alt.bytes) && Array.isArray(entry.bytes)
          ? sameBytes(alt.bytes, entry.bytes)
          : alt.token === entry.token,
      }));
      tokens.push({ text: own, logprob: entry.logprob, top });
    }
    const rest = decoder.decode();
    if (rest && tokens.length) tokens[tokens.length - 1].text += rest;
    if (typeof text === "string") endsMark(tokens, text);
    return tokens;
  }

  /* Mark end the tokens after those that spell text. Whitespace is left
   * out of the comparison: a detokenizer may clean spaces up. Tokens that
   * do not spell text leave all unmarked. */
  function endsMark(tokens, text) {
    const squeeze = (s) => s.replace(/\s+/g, "");
    const target = squeeze(text);
    let at = 0;
    let index = 0;
    for (; index < tokens.length && at < target.length; index++) {
      const part = squeeze(tokens[index].text);
      if (!target.startsWith(part, at)) return;
      at += part.length;
    }
    if (at !== target.length) return;
    for (; index < tokens.length; index++) {
      if (squeeze(tokens[index].text)) tokens[index].end = true;
    }
  }

  function icon() {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "14");
    svg.setAttribute("height", "14");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "tokens-icon");
    // Bars of different heights: how likely each token was.
    for (const d of ["M4 20V13", "M9.3 20V5", "M14.6 20V10", "M20 20v-4"]) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.append(path);
    }
    return svg;
  }

  /* The toggle between an answer and its tokens; extra classes join its
   * own (the chat's "small-button"). */
  function button({ pressed, onClick, className }) {
    return el(
      "button",
      {
        type: "button",
        class: `tokens-button${className ? ` ${className}` : ""}${pressed ? " active" : ""}`,
        "aria-label": gettext("Token probabilities"),
        "aria-pressed": pressed ? "true" : "false",
        title: pressed ? gettext("Token probabilities (click for the plain answer)") : gettext("Token probabilities"),
        "data-testid": "token-view-toggle",
        onclick: onClick,
      },
      icon()
    );
  }

  /* Fill body with one focusable span per token; only the first is in the
   * tab order, the arrow keys move between them. */
  function render(body, tokens) {
    body.classList.add("token-text");
    body.setAttribute("role", "group");
    body.setAttribute("aria-label", gettext("The answer's tokens: arrow keys move, Enter lists the alternatives"));
    if (!tokens.length) {
      body.replaceChildren(el("span", { class: "muted", text: gettext("No token probabilities were kept for this answer.") }));
      return;
    }
    body.replaceChildren(
      ...tokens.map((token, index) => {
        const text = String(token.text);
        const newline = /\n/.test(text) && !text.trim();
        const kind = token.end ? " tok-end" : newline ? " tok-nl" : "";
        return el("span", {
          class: `tok ${bucket(token.logprob).tint}${kind}`,
          role: "button",
          tabindex: index === 0 ? "0" : "-1",
          "aria-haspopup": "dialog",
          "aria-expanded": "false",
          "aria-label": `${spoken(token)} (${percent(token.logprob)})`,
          "data-index": index,
          "data-testid": "token",
          text,
        });
      })
    );
  }

  /* Undo render(): body is the plain answer's again. */
  function unrender(body) {
    body.classList.remove("token-text");
    body.removeAttribute("role");
    body.removeAttribute("aria-label");
  }

  function legend() {
    return el(
      "div",
      { class: "token-legend", "data-testid": "token-legend" },
      el("span", { class: "legend-title", text: gettext("Probability") }),
      ...BUCKETS.map((b) => el("span", { class: `legend-key ${b.tint}`, text: b.label })),
      el("span", {
        class: "legend-hint",
        text: canHover.matches
          ? gettext("Point at or click a token for its alternatives.")
          : gettext("Tap a token for its alternatives."),
      })
    );
  }

  /* The alternatives of a token, in one popover for every answer inside
   * options.container (positioned; the popover is placed inside it and
   * kept to its width). options.context(span) names the token a span
   * stands for: {tokens, index, ...} or null; whatever else it holds is
   * passed on to options.pick. Without pick the alternatives are only
   * listed; with it each is a button:
   *
   *   pick = {
   *     mark: "↻",                        shown before each alternative
   *     label(text) -> string             what picking it does
   *     hint: string                      under the list
   *     blocked(context, text) -> reason  null where it can be picked
   *     run(context, text)                pick it
   *   }
   *
   * Returns {element, open(span, {pinned, focus}), close(returnFocus),
   * check(), escape() -> whether it closed}. */
  function popover(options) {
    const { container, context, pick } = options;
    const element = el("div", {
      class: "token-popover",
      role: "dialog",
      "aria-label": gettext("Alternatives for this token"),
      "data-testid": "token-popover",
      hidden: true,
    });
    container.append(element);
    // The token it is open for, and whether a click or a key opened it (it
    // then stays until closed) or the mouse resting on the token did.
    let at = { anchor: null, pinned: false };
    let hoverTimer = null;

    function row(alt, { chosen, blocked, onPick }) {
      const fill = el("span", { class: `tp-fill ${bucket(alt.logprob).tint}` });
      fill.style.width = `${(probability(alt.logprob) * 100).toFixed(1)}%`;
      const parts = [
        el("span", { class: "tp-mark", "aria-hidden": "true", text: chosen ? "✓" : pick ? pick.mark : "" }),
        el("code", { class: "tp-token", text: alt.end ? alt.text : shown(alt.text) }),
        el("span", { class: "tp-bar", "aria-hidden": "true" }, fill),
        el("span", { class: "tp-pct", text: percent(alt.logprob) }),
      ];
      if (chosen) {
        return el(
          "div",
          { class: "tp-row tp-chosen", "data-testid": "token-chosen" },
          ...parts,
          el("span", { class: "tp-sr", text: " (chosen)" })
        );
      }
      if (!pick) {
        return el("div", { class: "tp-row", "data-testid": "token-alternative", "data-token": alt.text }, ...parts);
      }
      return el(
        "button",
        {
          type: "button",
          class: "tp-row tp-alt",
          "aria-label": `${pick.label(alt.text)} (${percent(alt.logprob)})`,
          title: blocked || pick.label(alt.text),
          "data-testid": "token-alternative",
          "data-token": alt.text,
          disabled: !!blocked,
          onclick: onPick,
        },
        ...parts
      );
    }

    function open(span, { pinned, focus }) {
      const found = context(span);
      if (!found || !found.tokens[found.index]) return;
      clearTimeout(hoverTimer);
      if (at.anchor && at.anchor !== span) close(false);
      const { tokens, index } = found;
      const token = tokens[index];
      const top = Array.isArray(token.top) ? token.top : [];
      const isChosen = (alt) => (typeof alt.chosen === "boolean" ? alt.chosen : alt.text === token.text);
      const rows = [];
      if (!top.some(isChosen)) rows.push(row(token, { chosen: true }));
      for (const alt of top) {
        const text = String(alt.text);
        if (isChosen(alt)) {
          rows.push(row({ text, logprob: alt.logprob, end: token.end }, { chosen: true }));
          continue;
        }
        const blocked = pick ? pick.blocked(found, text) : null;
        rows.push(row({ text, logprob: alt.logprob }, { blocked, onPick: pick && (() => pick.run(found, text)) }));
      }
      let hint = top.length > 1 ? "" : gettext("The model weighed no other token here.");
      if (top.length > 1 && pick) hint = pick.hint;
      element.replaceChildren(
        el(
          "div",
          { class: "tp-head" },
          el("span", {
            text: token.end
              ? gettext("End of the answer")
              : interpolate(gettext("Token %(n)s of %(count)s"), { n: index + 1, count: tokens.length }, true),
          }),
          el("button", {
            type: "button",
            class: "tp-close",
            "aria-label": gettext("Close the alternatives"),
            "data-testid": "token-popover-close",
            text: "✕",
            onclick: () => close(true),
          })
        ),
        el("ul", { class: "tp-list" }, ...rows.map((r) => el("li", {}, r))),
        el("p", { class: "tp-hint", text: hint, hidden: !hint })
      );
      at = { anchor: span, pinned: pinned || (at.anchor === span && at.pinned) };
      span.classList.add("active");
      span.setAttribute("aria-expanded", "true");
      element.hidden = false;
      place(span);
      if (focus) {
        element.scrollIntoView({ block: "nearest" });
        const first = element.querySelector(".tp-alt:not(:disabled)") || element.querySelector(".tp-close");
        first.focus();
      }
    }

    /* Under the token, or over it where there is more room there, in the
     * part of the container the window shows; inside the container's
     * width. A token broken over two lines is kept clear of: under its
     * last line, over its first. */
    function place(span) {
      const box = container.getBoundingClientRect();
      const lines = span.getClientRects();
      const first = lines[0] || span.getBoundingClientRect();
      const last = lines[lines.length - 1] || first;
      const gap = 6;
      const margin = 8;
      const height = element.offsetHeight;
      const width = element.offsetWidth;
      const roomBelow = Math.min(box.bottom, window.innerHeight) - last.bottom;
      const roomAbove = first.top - Math.max(box.top, 0);
      const above = height + gap > roomBelow && roomAbove > roomBelow;
      const rect = above ? first : last;
      // Offsets of an absolute child are from the padding box, inside the
      // border, and move with the container's scrolling.
      const originX = box.left + container.clientLeft;
      const originY = box.top + container.clientTop;
      const left = Math.max(margin, Math.min(rect.left - originX, container.clientWidth - width - margin));
      const top = above ? rect.top - originY - height - gap : rect.bottom - originY + gap;
      element.classList.toggle("above", above);
      element.style.left = `${Math.round(left)}px`;
      element.style.top = `${Math.round(Math.max(top + container.scrollTop, 0))}px`;
    }

    function close(returnFocus) {
      clearTimeout(hoverTimer);
      const anchor = at.anchor;
      at = { anchor: null, pinned: false };
      if (element.hidden) return;
      element.hidden = true;
      element.replaceChildren();
      if (!anchor) return;
      anchor.classList.remove("active");
      anchor.setAttribute("aria-expanded", "false");
      if (returnFocus && anchor.isConnected) anchor.focus();
    }

    /* A re-rendered answer has new token spans: the open popover may
     * point at one that is gone. */
    function check() {
      if (at.anchor && !at.anchor.isConnected) close(false);
    }

    /* Esc: close it, the focus back on its token when it was inside. */
    function escape() {
      if (element.hidden) return false;
      const inside = element.contains(document.activeElement) || document.activeElement === at.anchor;
      close(inside);
      return true;
    }

    function moveTo(from, to) {
      if (!to) return;
      from.setAttribute("tabindex", "-1");
      to.setAttribute("tabindex", "0");
      to.focus();
      // Keyboard readers browse the alternatives as they go.
      if (at.anchor === from) open(to, { pinned: true, focus: false });
    }

    function onKey(event) {
      const span = event.target.closest ? event.target.closest(".tok") : null;
      if (span) {
        const body = span.parentElement;
        const moves = {
          ArrowRight: () => span.nextElementSibling,
          ArrowLeft: () => span.previousElementSibling,
          Home: () => body.firstElementChild,
          End: () => body.lastElementChild,
        };
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          open(span, { pinned: true, focus: true });
        } else if (moves[event.key]) {
          event.preventDefault();
          moveTo(span, moves[event.key]());
        }
        return;
      }
      if (element.contains(event.target) && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
        const buttons = [...element.querySelectorAll("button:not(:disabled)")];
        const from = buttons.indexOf(event.target);
        const next = buttons[(from + (event.key === "ArrowDown" ? 1 : -1) + buttons.length) % buttons.length];
        if (next) {
          event.preventDefault();
          next.focus();
        }
      }
    }

    function onClick(event) {
      const span = event.target.closest ? event.target.closest(".tok") : null;
      if (!span) return;
      if (at.anchor === span && at.pinned) close(false);
      else open(span, { pinned: true, focus: false });
    }

    // The mouse resting on a token opens its popover; leaving the token and
    // the popover closes it, unless a click pinned it.
    function onPointerOver(event) {
      if (event.pointerType !== "mouse") return;
      if (element.contains(event.target)) {
        clearTimeout(hoverTimer);
        return;
      }
      const span = event.target.closest(".tok");
      if (!span) return;
      clearTimeout(hoverTimer);
      if (span === at.anchor || at.pinned) return;
      hoverTimer = setTimeout(() => open(span, { pinned: false, focus: false }), HOVER_OPEN_MS);
    }

    function onPointerOut(event) {
      if (event.pointerType !== "mouse") return;
      const from = event.target.closest(".tok, .token-popover");
      if (!from || (event.relatedTarget && from.contains(event.relatedTarget))) return;
      clearTimeout(hoverTimer);
      if (at.pinned) return;
      hoverTimer = setTimeout(() => {
        if (!at.pinned) close(false);
      }, HOVER_CLOSE_MS);
    }

    // A box scrolling inside the container (an answer's own scroller)
    // carries the token away: follow it, or close once it is out of view.
    function onScroll(event) {
      const scroller = event.target;
      if (!at.anchor || !(scroller instanceof Element) || scroller === container) return;
      if (!container.contains(scroller) || !scroller.contains(at.anchor)) return;
      const view = scroller.getBoundingClientRect();
      const rect = at.anchor.getBoundingClientRect();
      if (rect.bottom < view.top || rect.top > view.bottom) close(false);
      else place(at.anchor);
    }

    container.addEventListener("click", onClick);
    container.addEventListener("keydown", onKey);
    container.addEventListener("pointerover", onPointerOver);
    container.addEventListener("pointerout", onPointerOut);
    document.addEventListener("scroll", onScroll, true);
    document.addEventListener("click", (event) => {
      if (!(event.target instanceof Element) || element.contains(event.target)) return;
      if (!event.target.closest(".tok")) close(false);
    });
    window.addEventListener("resize", () => close(false));

    return Object.freeze({ element, open, close, check, escape });
  }

  window.TokenView = Object.freeze({
    BUCKETS,
    percent,
    fromLogprobs,
    button,
    render,
    unrender,
    legend,
    popover,
  });
})();
