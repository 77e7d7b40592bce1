// Markdown for untrusted, streamed model output: markdown-it renders,
// highlight.js colours fenced code, DOMPurify has the last word.
//
// Needs, loaded before this file: vendor/markdown-it/markdown-it.min.js
// (window.markdownit), vendor/dompurify/purify.min.js (window.DOMPurify)
// and, optionally, vendor/highlight/highlight.min.js (window.hljs).
//
// window.ChatMarkdown = {
//   render(text) -> string          sanitized HTML for Markdown text
//   enhance(rootElement) -> void    copy buttons inside root; idempotent
//   copyText(text) -> Promise<boolean>
// }
(function () {
  "use strict";

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
  const DOMPurify = window.DOMPurify;
  const hljs = window.hljs;

  const PURIFY_CONFIG = {
    USE_PROFILES: { html: true },
    FORBID_TAGS: [
      "style", "img", "svg", "math", "form", "input", "textarea", "select",
      "iframe", "object", "embed", "frame", "frameset", "video", "audio",
      "source", "picture", "link", "meta", "base",
    ],
    // id and name are never produced; forbidding them rules out DOM
    // clobbering of the page's own globals.
    FORBID_ATTR: ["style", "id", "name", "srcset", "formaction"],
    ADD_ATTR: ["target", "rel", "data-copy-code", "class"],
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
      '<button type="button" class="copy-code" data-copy-code>Copy</button>' +
      "</div>" +
      '<pre><code class="hljs language-' + escapeHtml(lang) + '">' +
      highlight(code, lang) +
      "</code></pre></div>\n"
    );
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
      const marker = ' <span class="md-image">(image)</span>';
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

    return md;
  }

  const md = markdownit ? createRenderer() : null;

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
      html = md.render(source);
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

  const enhancedRoots = new WeakSet();
  const resetTimers = new WeakMap();

  function showCopied(button, copied) {
    button.textContent = copied ? "Copied" : "Copy failed";
    clearTimeout(resetTimers.get(button));
    resetTimers.set(
      button,
      setTimeout(() => {
        button.textContent = "Copy";
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

  // Make the copy buttons inside root work, including those rendered into
  // it later: one delegated listener per root, however often called.
  function enhance(root) {
    if (!root || enhancedRoots.has(root)) return;
    enhancedRoots.add(root);
    root.addEventListener("click", onRootClick);
  }

  window.ChatMarkdown = Object.freeze({ render, enhance, copyText });
})();
