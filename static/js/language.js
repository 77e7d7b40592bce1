/* The language switcher (templates/language_form.html): picking a language
 * submits the form at once, so its button is only for pages without
 * scripts. */
(function () {
  "use strict";

  for (const form of document.querySelectorAll("[data-language-form]")) {
    const submit = form.querySelector("[data-language-submit]");
    if (submit) submit.hidden = true;
    form.querySelector("select").addEventListener("change", () => form.submit());
  }
})();
