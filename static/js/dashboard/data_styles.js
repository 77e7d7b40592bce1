/* Sizes and colours the server works out per element (a progress bar's
 * width, a reply's indent, a site's colour, the number of columns) come as
 * data-css-* attributes and are applied here through the CSS object model.
 * The Content-Security-Policy (style-src 'self') refuses style attributes
 * in markup but not styles a script sets. Each attribute takes one kind
 * of value; anything else is ignored. Elements added later (lists that
 * refresh themselves) get theirs as they arrive. */
(function () {
  "use strict";

  const NUMBER = /^\d{1,6}(\.\d{1,3})?$/;
  const COLOUR = /^#[0-9a-fA-F]{3,8}$/;
  const RULES = [
    { attribute: "data-css-width", test: NUMBER, apply: (node, v) => { node.style.width = `${v}%`; } },
    { attribute: "data-css-depth", test: NUMBER, apply: (node, v) => node.style.setProperty("--depth", v) },
    { attribute: "data-css-columns", test: NUMBER, apply: (node, v) => node.style.setProperty("--columns", v) },
    { attribute: "data-css-swatch", test: COLOUR, apply: (node, v) => node.style.setProperty("--swatch", v) },
  ];
  const SELECTOR = RULES.map((rule) => `[${rule.attribute}]`).join(",");

  function applyTo(node) {
    for (const rule of RULES) {
      const value = node.getAttribute(rule.attribute);
      if (value !== null && rule.test.test(value)) rule.apply(node, value);
    }
  }

  function applyWithin(root) {
    if (root.matches && root.matches(SELECTOR)) applyTo(root);
    if (root.querySelectorAll) root.querySelectorAll(SELECTOR).forEach(applyTo);
  }

  applyWithin(document.documentElement);
  new MutationObserver((records) => {
    for (const record of records) {
      record.addedNodes.forEach((node) => {
        if (node.nodeType === Node.ELEMENT_NODE) applyWithin(node);
      });
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
