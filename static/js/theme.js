/* The colour theme: light, dark or the system's (prefers-color-scheme).
 *
 * Loaded without defer or async at the top of <head> (after the
 * translations' catalogue, /jsi18n/), so the chosen theme
 * is on <html> before the first paint (the Content-Security-Policy allows
 * no inline script). The choice lives in localStorage under "theme";
 * without one the stylesheets follow the system. The key and values are
 * those of the Django admin's own toggle ("auto" there is System here), so
 * the admin pages follow the same choice. The top bar's button
 * (data-testid="theme-toggle") cycles System, Light, Dark; other tabs
 * follow a change through the storage event.
 *
 * Stylesheets that belong to one scheme (the highlight.js themes) carry
 * data-theme-media="light" or "dark" and get their media attribute from
 * here: always, never, or the system's media query.
 */
(function () {
  "use strict";

  const KEY = "theme";
  const CHOICES = ["system", "light", "dark"];
  const LABELS = {
    system: pgettext("colour theme", "System"),
    light: pgettext("colour theme", "Light"),
    dark: pgettext("colour theme", "Dark"),
  };
  const ICONS = { system: "\u25D0", light: "\u2600", dark: "\u263E" };
  const root = document.documentElement;

  function stored() {
    try {
      const value = window.localStorage.getItem(KEY);
      return value === "light" || value === "dark" ? value : "system";
    } catch (error) {
      // Storage can be off (privacy settings); the system's scheme applies.
      return "system";
    }
  }

  function store(choice) {
    try {
      if (choice === "system") window.localStorage.removeItem(KEY);
      else window.localStorage.setItem(KEY, choice);
    } catch (error) {
      // Not remembered, but still applied to this page.
    }
  }

  function applyLinks(choice) {
    for (const link of document.querySelectorAll("link[data-theme-media]")) {
      const scheme = link.dataset.themeMedia;
      link.media =
        choice === "system" ? "(prefers-color-scheme: " + scheme + ")" : choice === scheme ? "all" : "not all";
    }
  }

  function applyButton(choice) {
    const button = document.querySelector('[data-testid="theme-toggle"]');
    if (!button) return;
    const next = CHOICES[(CHOICES.indexOf(choice) + 1) % CHOICES.length];
    button.dataset.choice = choice;
    const names = { theme: LABELS[choice], next: LABELS[next] };
    button.setAttribute(
      "aria-label",
      interpolate(gettext("Theme: %(theme)s. Switch to %(next)s"), names, true)
    );
    button.title = interpolate(gettext("Theme: %(theme)s (switch to %(next)s)"), names, true);
    const icon = button.querySelector(".theme-icon");
    const label = button.querySelector(".theme-label");
    if (icon) icon.textContent = ICONS[choice];
    if (label) label.textContent = LABELS[choice];
  }

  // The choice shown, kept here too: with storage off it is not read back.
  let current = stored();

  function apply(choice) {
    current = choice;
    if (choice === "system") root.removeAttribute("data-theme");
    else root.dataset.theme = choice;
    const meta = document.querySelector('meta[name="color-scheme"]');
    if (meta) meta.content = choice === "system" ? "light dark" : choice;
    applyLinks(choice);
    applyButton(choice);
  }

  apply(current);

  document.addEventListener("DOMContentLoaded", () => {
    // The links and the button come after this script in the document.
    apply(current);
    const button = document.querySelector('[data-testid="theme-toggle"]');
    if (!button) return;
    button.hidden = false;
    button.addEventListener("click", () => {
      const next = CHOICES[(CHOICES.indexOf(current) + 1) % CHOICES.length];
      store(next);
      apply(next);
    });
  });

  window.addEventListener("storage", (event) => {
    if (event.key === KEY || event.key === null) apply(stored());
  });
})();
