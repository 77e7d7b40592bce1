/* The chat widget's loader, for customers' pages:
 *
 *   <script src="https://HOST/static/widget/embed.js" data-site="KEY" async></script>
 *
 * Draws a launcher button from the site's configuration and, the first time
 * it is opened, an iframe holding the chat. The page and the frame talk by
 * postMessage only, always naming the other side's origin and checking the
 * origin and source of what arrives. The visitor's token lives in this
 * page's localStorage so the conversation survives reloads.
 *
 * window.ChatWidget: open(), close(), toggle(), identify(user, signature),
 * reset(), on(event, fn) with events "ready", "open", "close", "unread".
 * Calls queued before load as window.ChatWidget = {q: [["open"], ...]} run
 * once the widget is drawn.
 */
(function () {
  "use strict";

  const script = document.currentScript;
  const existing = window.ChatWidget;
  if (!script || (existing && existing.loaded)) return; // loaded twice

  const P = "chat-widget-"; // prefix of every class this file adds
  const key = script.getAttribute("data-site") || "";
  const server = new URL(script.src, location.href).origin;
  const storageKey = `chatWidget:${key}:token`;
  // A token reset() forgot while no frame was there to revoke it: the next
  // frame names it in its hello, and the server revokes it.
  const revokeKey = `chatWidget:${key}:revoke`;
  const SVG = "http://www.w3.org/2000/svg";

  const listeners = { ready: [], open: [], close: [], unread: [] };
  let config = null;
  let launcher = null;
  let badge = null;
  let container = null;
  let iframe = null;
  let frameOrigin = "";
  let frameReady = false;
  let isOpen = false;
  let wantOpen = false; // open() called before the launcher was drawn
  let unread = 0;
  let identity = null;

  function fail(message) {
    console.error(`Chat widget: ${message}`);
  }

  function emit(event, value) {
    for (const fn of listeners[event]) {
      try {
        fn(value);
      } catch (error) {
        fail(`a "${event}" listener failed: ${error}`);
      }
    }
  }

  // Storage may be blocked (privacy settings, sandboxed pages): the chat
  // then simply starts fresh on each page load.
  function tokenRead() {
    try {
      return localStorage.getItem(storageKey);
    } catch (_error) {
      return null;
    }
  }

  function tokenWrite(token) {
    try {
      if (token) localStorage.setItem(storageKey, token);
      else localStorage.removeItem(storageKey);
    } catch (_error) {
      /* storage blocked */
    }
  }

  function revokeRead() {
    try {
      return localStorage.getItem(revokeKey);
    } catch (_error) {
      return null;
    }
  }

  function revokeWrite(token) {
    try {
      if (token) localStorage.setItem(revokeKey, token);
      else localStorage.removeItem(revokeKey);
    } catch (_error) {
      /* storage blocked */
    }
  }

  // Black or white, whichever contrasts more with the colour (WCAG
  // relative luminance).
  function textOn(hex) {
    const channel = (i) => {
      const c = parseInt(hex.slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    const lum = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? "#000" : "#fff";
  }

  function make(tag, className, attrs) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const name in attrs || {}) node.setAttribute(name, attrs[name]);
    return node;
  }

  function styles(color, ink) {
    // `all: initial` shields the widget from the host page's element rules;
    // !important keeps the colours even against a page's !important ones.
    const css = `
.${P}launcher,.${P}badge,.${P}container,.${P}frame{all:initial;box-sizing:border-box}
.${P}launcher{position:fixed;bottom:20px;z-index:2147483000;width:56px;height:56px;
border-radius:50%;background:${color}!important;color:${ink}!important;cursor:pointer;display:flex;
align-items:center;justify-content:center;box-shadow:0 4px 14px rgba(0,0,0,.25)}
.${P}launcher:focus-visible{outline:3px solid #111;outline-offset:2px;
box-shadow:0 0 0 2px #fff,0 4px 14px rgba(0,0,0,.25)}
.${P}launcher svg{width:28px;height:28px;fill:none;stroke:currentColor;stroke-width:2;
stroke-linecap:round;stroke-linejoin:round;pointer-events:none}
.${P}badge{position:absolute;top:-4px;right:-4px;min-width:20px;height:20px;padding:0 5px;
border-radius:10px;background:#c62828;color:#fff;font:700 12px/20px system-ui,sans-serif;
text-align:center;border:2px solid #fff}
.${P}badge[hidden]{display:none}
.${P}container{position:fixed;bottom:88px;z-index:2147483001;width:380px;height:600px;
max-width:calc(100vw - 40px);max-height:calc(100vh - 108px);border-radius:12px;
overflow:hidden;background:#fff;box-shadow:0 8px 32px rgba(0,0,0,.3);display:none}
.${P}container.${P}open{display:block;animation:${P}in .18s ease-out}
.${P}container.${P}full{width:calc(100vw - 40px);height:calc(100vh - 108px)}
.${P}frame{display:block;width:100%;height:100%;border:0}
.${P}right{right:20px}.${P}left{left:20px}
@keyframes ${P}in{from{opacity:0;transform:translateY(12px)}to{opacity:1;transform:none}}
@media (max-width:639.98px){.${P}container{inset:0;width:100%;height:100%;max-width:none;
max-height:none;border-radius:0}}
@media (prefers-reduced-motion:reduce){.${P}container.${P}open{animation:none}}`;
    const style = make("style", `${P}style`);
    style.textContent = css;
    document.head.appendChild(style);
  }

  function icon() {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", "M21 12a8 8 0 0 1-11.6 7.1L4 20.5l1.4-4.9A8 8 0 1 1 21 12z");
    svg.appendChild(path);
    return svg;
  }

  function labelLauncher() {
    // The words come with the configuration, in the widget's language.
    const words = Object.assign(
      { open: "Open chat: {title}", close: "Close chat", unread: "{count} unread", chat: "Chat" },
      config.labels || {}
    );
    const action = isOpen ? words.close : words.open.replace("{title}", config.title || words.chat);
    const extra = unread && !isOpen ? ` (${words.unread.replace("{count}", unread)})` : "";
    launcher.setAttribute("aria-label", action + extra);
    launcher.setAttribute("aria-expanded", String(isOpen));
    badge.textContent = unread > 99 ? "99+" : String(unread);
    badge.hidden = !unread || isOpen;
  }

  function draw() {
    const color = /^#[0-9a-f]{6}$/i.test(config.color || "") ? config.color : "#2f6feb";
    const side = config.position === "left" ? "left" : "right";
    styles(color, textOn(color));
    launcher = make("button", `${P}launcher ${P}${side}`, {
      type: "button",
      "data-testid": "widget-launcher",
      "aria-controls": `${P}container`,
    });
    badge = make("span", `${P}badge`, { "data-testid": "widget-unread", "aria-hidden": "true" });
    launcher.append(icon(), badge);
    launcher.addEventListener("click", toggle);
    container = make("div", `${P}container ${P}${side}`, {
      id: `${P}container`,
      "data-testid": "widget-container",
    });
    labelLauncher();
    document.body.append(container, launcher);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && isOpen && !event.defaultPrevented) close();
    });
    window.addEventListener("message", onMessage);
  }

  function post(message) {
    if (!iframe || !frameReady || !iframe.contentWindow) return;
    iframe.contentWindow.postMessage(Object.assign({ chatWidget: 1 }, message), frameOrigin);
  }

  function onMessage(event) {
    if (!iframe || event.source !== iframe.contentWindow || event.origin !== frameOrigin) return;
    const data = event.data;
    if (!data || typeof data !== "object" || data.chatWidget !== 1) return;
    switch (data.type) {
      case "ready":
        frameReady = true;
        post({ type: "init", token: tokenRead(), revoke: revokeRead(), identity });
        post({ type: isOpen ? "opened" : "closed" });
        return;
      case "revoked":
        revokeWrite(null);
        return;
      case "token":
        if (data.token === null || (typeof data.token === "string" && data.token.length <= 1000)) {
          tokenWrite(data.token);
        }
        return;
      case "unread":
        if (isOpen || !Number.isInteger(data.count) || data.count < 0) return;
        unread = data.count;
        labelLauncher();
        emit("unread", unread);
        return;
      case "close":
        close();
        return;
      case "resize":
        container.classList.toggle(`${P}full`, data.full === true);
        return;
      default:
        return;
    }
  }

  function frameCreate() {
    const url = new URL(config.frame_url, server);
    frameOrigin = url.origin;
    url.searchParams.set("origin", location.origin);
    iframe = make("iframe", `${P}frame`, {
      title: config.title || "Chat",
      src: url.href,
      // The microphone for dictation (the browser still asks the visitor).
      allow: "clipboard-write; microphone; autoplay",
    });
    container.appendChild(iframe);
  }

  function open() {
    if (!config) {
      wantOpen = true;
      return;
    }
    if (isOpen) return;
    isOpen = true;
    if (!iframe) frameCreate();
    container.classList.add(`${P}open`);
    const hadUnread = unread;
    unread = 0;
    labelLauncher();
    iframe.focus();
    post({ type: "opened" });
    if (hadUnread) emit("unread", 0);
    emit("open");
  }

  function close() {
    wantOpen = false;
    if (!config || !isOpen) return;
    isOpen = false;
    container.classList.remove(`${P}open`);
    labelLauncher();
    post({ type: "closed" });
    launcher.focus();
    emit("close");
  }

  function toggle() {
    if (isOpen) close();
    else open();
  }

  function identify(user, signature) {
    identity = { user: String(user), signature: String(signature) };
    post({ type: "identify", user: identity.user, signature: identity.signature });
  }

  function reset() {
    identity = null;
    const forgotten = tokenRead();
    tokenWrite(null);
    unread = 0;
    if (config) labelLauncher();
    if (iframe && frameReady) post({ type: "reset" });
    else if (forgotten) revokeWrite(forgotten);
  }

  function on(event, fn) {
    if (!listeners[event] || typeof fn !== "function") return;
    listeners[event].push(fn);
    if (event === "ready" && config) fn();
  }

  const api = { loaded: true, open, close, toggle, identify, reset, on };
  window.ChatWidget = api;

  function start() {
    if (!key) {
      fail(`the script tag has no data-site key (page ${location.origin}).`);
      return;
    }
    const refused =
      `could not load the widget for key "${key}" on ${location.origin}. Check the key, ` +
      `and that ${location.origin} is among the site's allowed origins in the dashboard.`;
    fetch(`${server}/widget/config/?key=${encodeURIComponent(key)}`, { credentials: "omit" })
      .then((response) => (response.ok ? response.json() : null))
      .catch(() => null)
      .then((data) => {
        if (!data || !validUrl(data.frame_url)) {
          fail(refused);
          return;
        }
        config = data;
        draw();
        emit("ready");
        if (wantOpen) open();
      });
  }

  function validUrl(text) {
    try {
      return /^https?:$/.test(new URL(text, server).protocol);
    } catch (_error) {
      return false;
    }
  }

  // Calls made before this file loaded.
  if (existing && Array.isArray(existing.q)) {
    for (const call of existing.q) {
      const args = Array.from(call || []);
      const method = api[args.shift()];
      if (typeof method === "function") method.apply(api, args);
    }
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
