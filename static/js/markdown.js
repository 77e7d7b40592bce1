// Markdown for untrusted, streamed model output: markdown-it renders,
// highlight.js colours fenced code, KaTeX typesets math, DOMPurify has the
// last word.
//
// Needs, loaded before this file: vendor/markdown-it/markdown-it.min.js
// (window.markdownit), vendor/dompurify/purify.min.js (window.DOMPurify)
// and, optionally, vendor/highlight/highlight.min.js (window.hljs) and
// vendor/katex/katex.min.js (window.katex; link vendor/katex/katex.min.css
// too). Without KaTeX, math shows as the text that was written.
//
// Math: $$...$$ and \[...\] display, \(...\) and $...$ inline. A $ opens
// only before a non-space and closes only after one, not before a digit,
// so "$5 and $10" stays text. Code spans and code blocks are never math;
// an unclosed delimiter (mid-stream) stays text until it closes.
//
// window.ChatMarkdown = {
//   render(text) -> string          sanitized HTML for Markdown text
//   enhance(rootElement) -> void    copy buttons and math layout inside
//                                   root, also for HTML put there later;
//                                   idempotent
//   copyText(text) -> Promise<boolean>
// }
(function () {
  "use strict";

  // The page's catalogue (Django's JavaScriptCatalog) when it has one;
  // the English words where the renderer runs on its own.
  const gettext = window.gettext || ((text) => text);

  const LINK_REL = "noopener noreferrer nofollow";
  const SAFE_SCHEMES = new Set(["http", "https", "mailto"]);
  // Highlighting is re-run on every streamed chunk; past this size a block
  // stays plain escaped text so the page keeps up with the stream.
  const HIGHLIGHT_MAX_CHARS = 50000;
  const COPIED_MS = 1500;
  // Characters browsers drop from a URL before reading its scheme (C0
  // controls, space, DEL), plus the invisible ones that can hide a scheme
  // from a reader.
  const URL_IGNORED = /[\u0000-\u0020\u007f-\u009f\u00ad\u200b-\u200f\u2028\u2029\u2060\ufeff]/g;
  const SCHEME = /^([a-z][a-z0-9+.-]*):/;
  const LANG_SAFE = /[^a-z0-9_+#.-]/g;

  const markdownit = window.markdownit;
  const hljs = window.hljs;
  const katex = window.katex;
  // A private instance: the hooks below apply to Markdown only.
  const DOMPurify = window.DOMPurify ? window.DOMPurify(window) : null;

  // KaTeX renders the TeX of untrusted text. trust: false refuses \href,
  // \url, \includegraphics and \html*; the limits keep a hostile formula
  // from growing without bound.
  const KATEX_OPTIONS = {
    throwOnError: false,
    trust: false,
    strict: "ignore",
    maxSize: 20,
    maxExpand: 200,
    output: "htmlAndMathml",
  };
  // Past these a formula shows as its source text: rendering time and the
  // size of the HTML grow with length and with nesting (400 nested
  // \underbrace make a megabyte of HTML, 20000 letters most of a second).
  const MATH_MAX_CHARS = 3000;
  const MATH_MAX_DEPTH = 40;
  const MATH_MAX_HTML = 300000;
  // Past this much KaTeX HTML in one answer, further formulas show as
  // text: the whole answer is sanitized again on every streamed chunk.
  const MATH_MAX_TOTAL_HTML = 500000;
  // Streaming re-renders the whole answer on every chunk; finished
  // formulas come from here.
  const MATH_CACHE_ENTRIES = 500;
  const MATH_CACHE_CHARS = 4000000;
  const MATH_NESTING = /\\(?:left|begin)(?![a-zA-Z])|\\(?:right|end)(?![a-zA-Z])|\\.|[{}]/g;

  // KaTeX positions its boxes with style attributes, which the page's
  // Content-Security-Policy (style-src 'self', no 'unsafe-inline') refuses
  // in markup. They travel in this attribute instead, the sanitizer keeps
  // only the declarations below and only inside KaTeX's output, and
  // enhance() applies them through the CSS object model, which the policy
  // does not govern (as js/dashboard/data_styles.js does for the
  // dashboard).
  const MATH_STYLE_ATTR = "data-math-style";
  const CSS_LENGTH = /^-?(?:\d{1,4}(?:\.\d{1,6})?|\.\d{1,6})(?:em|ex|px|pt|%)?$/;
  const CSS_COLOUR = /^(?:#[0-9a-f]{3,8}|[a-z]{3,20})$/i;
  const CSS_BORDER_STYLE = /^(?:solid|dashed)$/;
  const lengths = (max) => (value) => {
    const parts = value.split(/\s+/);
    return parts.length <= max && parts.every((part) => CSS_LENGTH.test(part));
  };
  const borderPart = (part) =>
    CSS_LENGTH.test(part) || CSS_BORDER_STYLE.test(part) || CSS_COLOUR.test(part);
  const MATH_STYLE_RULES = new Map([
    ...[
      "height", "width", "min-width", "max-width", "vertical-align", "top",
      "bottom", "left", "right", "margin-top", "margin-right",
      "margin-bottom", "margin-left", "padding-left", "padding-right",
      "border-top-width", "border-right-width", "border-bottom-width",
      "border-left-width",
    ].map((name) => [name, lengths(1)]),
    ...["margin", "padding", "border-width"].map((name) => [name, lengths(4)]),
    ...["color", "background-color", "border-color"].map((name) => [
      name, (value) => CSS_COLOUR.test(value),
    ]),
    ...[
      "border-style", "border-top-style", "border-right-style",
      "border-bottom-style", "border-left-style",
    ].map((name) => [name, (value) => CSS_BORDER_STYLE.test(value)]),
    ["position", (value) => value === "relative"],
    ["border", (value) => {
      const parts = value.split(/\s+/);
      return parts.length <= 3 && parts.every(borderPart);
    }],
  ]);

  const PURIFY_CONFIG = {
    USE_PROFILES: { html: true, mathMl: true },
    // KaTeX's MathML wraps each formula in <semantics> with its TeX in an
    // <annotation> (plain text; annotation-xml stays out), and draws
    // radicals, braces and arrows with <svg> <path> and <line>.
    ADD_TAGS: ["semantics", "annotation", "svg", "path", "line"],
    FORBID_TAGS: [
      "style", "img", "form", "input", "textarea", "select",
      "iframe", "object", "embed", "frame", "frameset", "video", "audio",
      "source", "picture", "link", "meta", "base",
    ],
    // id and name are never produced; forbidding them rules out DOM
    // clobbering of the page's own globals.
    FORBID_ATTR: ["style", "id", "name", "srcset", "formaction"],
    ADD_ATTR: [
      "target", "rel", "data-copy-code", "class", MATH_STYLE_ATTR,
      "viewbox", "preserveaspectratio", "d", "x1", "y1", "x2", "y2", "stroke-width",
    ],
    // Declarations read like "height:1em"; validated by mathStyle, not as
    // URLs.
    ADD_URI_SAFE_ATTR: [MATH_STYLE_ATTR],
    ALLOW_DATA_ATTR: false,
    // The same allowlist as validateLink, as a second line of defence.
    ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  };

  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  // Allow http:, https:, mailto: and links without a scheme (relative
  // paths, anchors, protocol-relative). The check runs on the URL as a
  // browser would read it: percent-escapes decoded, ignored characters
  // removed, case folded; anything that then names another scheme is
  // refused.
  function validateLink(url) {
    let text = String(url == null ? "" : url);
    try {
      text = decodeURIComponent(text);
    } catch (error) {
      // A malformed escape: judge the text as it stands.
    }
    text = text.replace(URL_IGNORED, "").toLowerCase();
    const match = SCHEME.exec(text);
    return match === null || SAFE_SCHEMES.has(match[1]);
  }

  function languageOf(info) {
    const word = (info || "").trim().split(/\s+/)[0].toLowerCase().replace(LANG_SAFE, "");
    if (word && hljs && hljs.getLanguage(word)) return word;
    return "plaintext";
  }

  function highlight(code, lang) {
    if (lang !== "plaintext" && hljs && code.length <= HIGHLIGHT_MAX_CHARS) {
      try {
        return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
      } catch (error) {
        // Fall back to plain text below.
      }
    }
    return escapeHtml(code);
  }

  function codeBlock(code, lang) {
    return (
      '<div class="code-block"><div class="code-head">' +
      '<span class="code-lang">' + escapeHtml(lang) + "</span>" +
      '<button type="button" class="copy-code" data-copy-code>' + escapeHtml(gettext("Copy")) + "</button>" +
      "</div>" +
      '<pre><code class="hljs language-' + escapeHtml(lang) + '">' +
      highlight(code, lang) +
      "</code></pre></div>\n"
    );
  }

  // The declarations of a style text that math may use, as "name:value"
  // strings; anything else (url(), expressions, position: fixed) is left
  // out.
  function mathStyle(text) {
    const kept = [];
    for (const declaration of String(text || "").split(";")) {
      const colon = declaration.indexOf(":");
      if (colon < 0) continue;
      const name = declaration.slice(0, colon).trim().toLowerCase();
      const value = declaration.slice(colon + 1).trim();
      const valid = MATH_STYLE_RULES.get(name);
      if (valid && value && valid(value)) kept.push(name + ":" + value);
    }
    return kept;
  }

  function mathNestingDepth(tex) {
    let depth = 0;
    let deepest = 0;
    for (const [token] of tex.matchAll(MATH_NESTING)) {
      if (token === "{" || token === "\\left" || token === "\\begin") {
        depth += 1;
        if (depth > deepest) deepest = depth;
      } else if (token === "}" || token === "\\right" || token === "\\end") {
        depth -= 1;
      }
    }
    return deepest;
  }

  const mathCache = new Map();
  let mathCacheChars = 0;

  function mathCacheSet(key, html) {
    mathCache.set(key, html);
    mathCacheChars += html === null ? 0 : html.length;
    while (mathCache.size > MATH_CACHE_ENTRIES || mathCacheChars > MATH_CACHE_CHARS) {
      const [oldest, value] = mathCache.entries().next().value;
      mathCache.delete(oldest);
      mathCacheChars -= value === null ? 0 : value.length;
    }
  }

  // KaTeX's HTML for tex, with its style attributes renamed (see
  // MATH_STYLE_ATTR), or null when it is not to be typeset: no KaTeX, over
  // the limits, or a failure throwOnError does not cover.
  function mathHtml(tex, display) {
    if (!katex || tex.length > MATH_MAX_CHARS || mathNestingDepth(tex) > MATH_MAX_DEPTH) {
      return null;
    }
    const key = (display ? "D" : "I") + tex;
    if (mathCache.has(key)) return mathCache.get(key);
    let html = null;
    try {
      html = katex.renderToString(tex, Object.assign({ displayMode: display }, KATEX_OPTIONS));
    } catch (error) {
      html = null; // Too deep for the stack, or a KaTeX bug.
    }
    if (html !== null && html.length > MATH_MAX_HTML) html = null;
    // Rename before anything parses the HTML: Chromium reports (and
    // refuses) style attributes even in the sanitizer's inert document.
    // KaTeX escapes quotes in text and attribute values, so ' style="'
    // occurs only as the attribute itself.
    if (html !== null) html = html.replace(/ style="/g, " " + MATH_STYLE_ATTR + '="');
    mathCacheSet(key, html);
    return html;
  }

  // mathHtml within what is left of the answer's budget (env.mathBudget).
  function mathHtmlBudgeted(tex, display, env) {
    const html = mathHtml(tex, display);
    if (html === null || !env || typeof env.mathBudget !== "number") return html;
    if (html.length > env.mathBudget) return null;
    env.mathBudget -= html.length;
    return html;
  }

  const isSpace = (code) => code === 0x20 || code === 0x09 || code === 0x0a || code === 0x0d;
  const isDigit = (code) => code >= 0x30 && code <= 0x39;

  // Index of the first close in src[from, to) outside a backslash escape,
  // or -1; also -1 when a backtick comes first and inline is set, so that
  // inline math never reaches into a code span.
  function findClose(src, from, to, close, inline) {
    for (let i = from; i < to; i += 1) {
      if (src.startsWith(close, i) && i + close.length <= to) return i;
      const code = src.charCodeAt(i);
      if (code === 0x60 && inline) return -1;
      if (code === 0x5c) i += 1;
    }
    return -1;
  }

  // Inline rule, ahead of markdown-it's escape rule (which would take
  // "\(" for an escaped parenthesis). Code spans are matched by their own
  // rule where they begin, so math never starts inside one.
  function mathInline(state, silent) {
    const src = state.src;
    const start = state.pos;
    const max = state.posMax;
    let open;
    let close;
    if (src.startsWith("$$", start)) [open, close] = ["$$", "$$"];
    else if (src.charCodeAt(start) === 0x24) [open, close] = ["$", "$"];
    else if (src.startsWith("\\(", start)) [open, close] = ["\\(", "\\)"];
    else if (src.startsWith("\\[", start)) [open, close] = ["\\[", "\\]"];
    else return false;
    const from = start + open.length;
    let end;
    if (open === "$") {
      // Only the next unescaped $ may close: "$5 and $10" is two prices.
      end = findClose(src, from, max, "$", true);
      if (
        end <= from ||
        isSpace(src.charCodeAt(from)) ||
        isSpace(src.charCodeAt(end - 1)) ||
        isDigit(src.charCodeAt(end + 1)) ||
        src.charCodeAt(end + 1) === 0x24
      ) {
        return false;
      }
    } else {
      end = findClose(src, from, max, close, true);
    }
    const content = end < 0 ? "" : src.slice(from, end);
    if (end < 0 || content.trim() === "") {
      if (open !== "$$") return false;
      // An unclosed $$ (mid-stream) is text, both dollars together, so
      // that the second cannot open inline math.
      if (!silent) state.pending += open;
      state.pos = from;
      return true;
    }
    if (!silent) {
      const token = state.push("math_inline", "math", 0);
      token.content = content;
      token.markup = open;
      token.info = close;
      token.meta = { display: open === "$$" || open === "\\[" };
    }
    state.pos = end + close.length;
    return true;
  }

  // Block rule: $$ or \[ at the start of a line, closed at the end of the
  // same or a later line of the same paragraph. Unclosed, it is not math
  // and the lines stay a paragraph of text.
  function mathBlock(state, startLine, endLine, silent) {
    if (state.sCount[startLine] - state.blkIndent >= 4) return false;
    const src = state.src;
    const start = state.bMarks[startLine] + state.tShift[startLine];
    let open;
    if (src.startsWith("$$", start)) open = "$$";
    else if (src.startsWith("\\[", start)) open = "\\[";
    else return false;
    const close = open === "$$" ? "$$" : "\\]";
    const lines = [];
    let line = startLine;
    let text = src.slice(start + open.length, state.eMarks[startLine]);
    for (;;) {
      const trimmed = text.trimEnd();
      const at = findClose(trimmed, 0, trimmed.length, close);
      if (at >= 0) {
        // Closed here; text after the close makes it inline math in a
        // paragraph instead.
        if (at + close.length !== trimmed.length) return false;
        lines.push(trimmed.slice(0, at));
        break;
      }
      lines.push(text);
      line += 1;
      if (line >= endLine || state.sCount[line] < state.blkIndent) return false;
      const lineStart = state.bMarks[line] + state.tShift[line];
      text = src.slice(lineStart, state.eMarks[line]);
      if (text.trim() === "" || /^(?:```|~~~)/.test(text)) return false;
    }
    const content = lines.join("\n");
    if (content.trim() === "") return false;
    if (silent) return true;
    const token = state.push("math_block", "math", 0);
    token.block = true;
    token.content = content;
    token.markup = open;
    token.info = close;
    token.map = [startLine, line + 1];
    state.line = line + 1;
    return true;
  }

  function mathSource(token) {
    return token.markup + token.content + token.info;
  }

  function insideLink(tokens, idx) {
    let depth = 0;
    for (let i = 0; i < idx; i += 1) {
      if (tokens[i].type === "link_open") depth += 1;
      else if (tokens[i].type === "link_close") depth -= 1;
    }
    return depth > 0;
  }

  function createRenderer() {
    const md = markdownit({
      html: false,
      linkify: true,
      breaks: false,
      typographer: false,
    });
    md.validateLink = validateLink;

    const rules = md.renderer.rules;
    const defaultLinkOpen =
      rules.link_open ||
      function (tokens, idx, options, env, self) {
        return self.renderToken(tokens, idx, options);
      };

    rules.link_open = function (tokens, idx, options, env, self) {
      tokens[idx].attrSet("target", "_blank");
      tokens[idx].attrSet("rel", LINK_REL);
      return defaultLinkOpen(tokens, idx, options, env, self);
    };

    // Never an <img>: a picture would be fetched the moment it is shown,
    // telling a third party who reads the conversation. Show a link the
    // reader may choose to follow instead.
    rules.image = function (tokens, idx, options, env, self) {
      const token = tokens[idx];
      const src = token.attrGet("src") || "";
      const alt = self.renderInlineAsText(token.children || [], options, env);
      const marker = ' <span class="md-image">' + escapeHtml(gettext("(image)")) + "</span>";
      if (!src || !validateLink(src) || insideLink(tokens, idx)) {
        return escapeHtml(alt) + marker;
      }
      return (
        '<a href="' + escapeHtml(src) + '" target="_blank" rel="' + LINK_REL + '">' +
        escapeHtml(alt || src) + "</a>" + marker
      );
    };

    rules.fence = function (tokens, idx) {
      const token = tokens[idx];
      const info = token.info ? md.utils.unescapeAll(token.info) : "";
      return codeBlock(token.content, languageOf(info));
    };

    rules.code_block = function (tokens, idx) {
      return codeBlock(tokens[idx].content, "plaintext");
    };

    md.inline.ruler.before("escape", "math_inline", mathInline);
    md.block.ruler.before("fence", "math_block", mathBlock, {
      alt: ["paragraph", "reference", "blockquote", "list"],
    });

    rules.math_inline = function (tokens, idx, options, env) {
      const token = tokens[idx];
      const html = mathHtmlBudgeted(token.content.trim(), token.meta.display, env);
      return html === null ? escapeHtml(mathSource(token)) : html;
    };

    rules.math_block = function (tokens, idx, options, env) {
      const token = tokens[idx];
      const html = mathHtmlBudgeted(token.content.trim(), true, env);
      if (html === null) {
        return "<p>" + escapeHtml(mathSource(token)).replace(/\n/g, "<br>") + "</p>\n";
      }
      return '<div class="math-display">' + html + "</div>\n";
    };

    return md;
  }

  const md = markdownit ? createRenderer() : null;

  if (DOMPurify) {
    DOMPurify.addHook("beforeSanitizeAttributes", (node) => {
      if (node.nodeType !== 1) return;
      // MathML and SVG elements never link anywhere.
      if (node.namespaceURI !== "http://www.w3.org/1999/xhtml") {
        node.removeAttribute("href");
        node.removeAttribute("xlink:href");
      }
      const declared = node.getAttribute(MATH_STYLE_ATTR);
      if (declared === null) return;
      const kept = node.closest(".katex, .katex-error") ? mathStyle(declared) : [];
      if (kept.length) node.setAttribute(MATH_STYLE_ATTR, kept.join(";"));
      else node.removeAttribute(MATH_STYLE_ATTR);
    });
  }

  // Escaped text in paragraphs: what render shows when a library is
  // missing or markdown-it fails, so raw HTML never reaches the page.
  function plainHtml(text) {
    return String(text)
      .split(/\n{2,}/)
      .filter((part) => part.trim() !== "")
      .map((part) => "<p>" + escapeHtml(part).replace(/\n/g, "<br>") + "</p>")
      .join("\n");
  }

  function render(text) {
    const source = text == null ? "" : String(text);
    if (!md || !DOMPurify) return plainHtml(source);
    let html;
    try {
      html = md.render(source, { mathBudget: MATH_MAX_TOTAL_HTML });
    } catch (error) {
      return plainHtml(source);
    }
    return DOMPurify.sanitize(html, PURIFY_CONFIG);
  }

  function copyWithTextarea(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.setAttribute("aria-hidden", "true");
    area.style.position = "fixed";
    area.style.top = "0";
    area.style.left = "-9999px";
    area.style.opacity = "0";
    const previousFocus = document.activeElement;
    const selection = document.getSelection();
    const previousRange = selection && selection.rangeCount > 0 ? selection.getRangeAt(0) : null;
    document.body.appendChild(area);
    area.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    area.remove();
    if (previousRange && selection) {
      selection.removeAllRanges();
      selection.addRange(previousRange);
    }
    if (previousFocus && typeof previousFocus.focus === "function") {
      previousFocus.focus({ preventScroll: true });
    }
    return copied;
  }

  // Copy text to the clipboard; resolve to whether it worked. The
  // asynchronous Clipboard API needs a secure context (https or
  // localhost); elsewhere, or when it is refused, a hidden textarea and
  // execCommand("copy") do the job.
  async function copyText(text) {
    const value = text == null ? "" : String(text);
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(value);
        return true;
      } catch (error) {
        // Refused (no permission, document not focused): try the fallback.
      }
    }
    return copyWithTextarea(value);
  }

  function within(root, selector) {
    const nodes = root.querySelectorAll ? [...root.querySelectorAll(selector)] : [];
    if (root.matches && root.matches(selector)) nodes.push(root);
    return nodes;
  }

  // Give the math in root, and root itself, the styles the sanitizer kept,
  // checked again.
  function layoutMath(root) {
    for (const node of within(root, "[" + MATH_STYLE_ATTR + "]")) {
      if (!node.style) continue;
      for (const declaration of mathStyle(node.getAttribute(MATH_STYLE_ATTR))) {
        const colon = declaration.indexOf(":");
        node.style.setProperty(declaration.slice(0, colon), declaration.slice(colon + 1));
      }
    }
  }

  const enhancedRoots = new WeakSet();
  const resetTimers = new WeakMap();

  function showCopied(button, copied) {
    button.textContent = copied ? gettext("Copied") : gettext("Copy failed");
    clearTimeout(resetTimers.get(button));
    resetTimers.set(
      button,
      setTimeout(() => {
        button.textContent = gettext("Copy");
        resetTimers.delete(button);
      }, COPIED_MS),
    );
  }

  async function onRootClick(event) {
    const target = event.target instanceof Element ? event.target : null;
    const button = target ? target.closest("[data-copy-code]") : null;
    if (!button || !event.currentTarget.contains(button)) return;
    event.preventDefault();
    const block = button.closest(".code-block");
    const code = block ? block.querySelector("pre code") : null;
    if (!code) return;
    showCopied(button, await copyText(code.textContent));
  }

  // Make the copy buttons inside root work and lay out its math, including
  // what is rendered into it later: one delegated listener and one
  // observer per root, however often called. The observer's callback runs
  // before the next paint, so math never shows unstyled.
  function enhance(root) {
    if (!root || enhancedRoots.has(root)) return;
    enhancedRoots.add(root);
    root.addEventListener("click", onRootClick);
    layoutMath(root);
    if (typeof MutationObserver === "function") {
      new MutationObserver((records) => {
        for (const record of records) {
          record.addedNodes.forEach((node) => {
            if (node.nodeType === Node.ELEMENT_NODE) layoutMath(node);
          });
        }
      }).observe(root, { childList: true, subtree: true });
    }
  }

  window.ChatMarkdown = Object.freeze({ render, enhance, copyText });
})();
