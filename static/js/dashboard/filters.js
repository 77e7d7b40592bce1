/* The content-filter pages: the rule form shows the fields its kind and
 * action use, its "Try it" box runs the unsaved rule on a sample text, and
 * the test panel runs saved rules on one.
 *
 * Results are drawn with DOM nodes and textContent only: sample texts,
 * matches and rule names never pass through innerHTML.
 */
(function () {
  "use strict";

  const ACTION_LABEL = {
    block: pgettext("a filter rule's action", "Block"),
    mask: pgettext("a filter rule's action", "Mask"),
    flag: pgettext("a filter rule's action", "Flag"),
  };

  // --- helpers -------------------------------------------------------------

  const el = DashboardSocket.el;

  function csrfToken() {
    const input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : "";
  }

  /* POST JSON; resolve to {ok, status, data} (data null when the answer
   * is not JSON). */
  async function postJSON(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": csrfToken(),
      },
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }

  function badge(action) {
    return el("span", { class: `badge action-${action}` }, ACTION_LABEL[action] || action);
  }

  /* A field's label on the page, for error lists. */
  function fieldLabel(form, name) {
    const label = form && form.querySelector(`[data-field="${CSS.escape(name)}"] label`);
    return label ? label.textContent.trim() : name;
  }

  function errorList(items) {
    return el("ul", { class: "errorlist nonfield", role: "alert" }, ...items.map((t) => el("li", {}, t)));
  }

  // --- drawing a result ----------------------------------------------------

  function outcome(data) {
    const verdict = data.verdict;
    const box = el("div", { class: "outcome", "data-outcome": "" });
    const masked = data.matches.some((m) => m.action === "mask");
    if (verdict.blocked) {
      box.classList.add("blocked");
      box.append(
        el("p", {}, el("strong", {}, gettext("Blocked.")), " ", gettext("The message is not shown; people see:")),
        el("blockquote", { class: "notice", "data-notice": "" }, verdict.notice),
      );
    } else if (masked) {
      box.classList.add("masked");
      box.append(
        el("p", {}, el("strong", {}, gettext("Masked.")), " ", gettext("The text becomes:")),
        el("pre", { class: "final-text", "data-final-text": "" }, verdict.text),
      );
    } else if (data.matches.length) {
      box.append(el("p", {}, el("strong", {}, gettext("Passes unchanged.")), " ", gettext("No match blocks or masks.")));
    } else {
      box.classList.add("clean");
      box.append(el("p", {}, el("strong", {}, gettext("No match.")), " ", gettext("The text passes unchanged.")));
    }
    if (data.flags.length) {
      const names = [...new Set(data.flags.map((f) => f.rule_name))];
      box.append(
        el(
          "p",
          { class: "flags", "data-flags": "" },
          badge("flag"),
          " " +
            interpolate(
              gettext("The conversation would be flagged for review by %(rules)s."),
              { rules: names.join(", ") },
              true
            ),
        ),
      );
    }
    return box;
  }

  function markedText(data) {
    const pre = el("pre", { class: "marked", "data-marked": "" });
    for (const piece of data.segments) {
      if (piece.match === null) {
        pre.append(document.createTextNode(piece.text));
        continue;
      }
      const match = data.matches[piece.match];
      pre.append(
        el(
          "mark",
          { class: `action-${match.action}`, title: `${match.rule_name}: ${ACTION_LABEL[match.action] || match.action}` },
          piece.text,
        ),
      );
    }
    return pre;
  }

  function matchTable(data) {
    const rows = data.matches.map((m, index) =>
      el(
        "tr",
        {},
        el("td", { class: "num" }, index + 1),
        el("td", {}, m.rule_name),
        el("td", {}, badge(m.action), m.timed_out ? " " + gettext("ran out of time") : null),
        el("td", {}, el("code", {}, m.text)),
        el("td", { class: "num nowrap" }, `${m.start}\u2013${m.end}`),
        el("td", {}, m.replacement ? el("code", {}, m.replacement) : "\u2014"),
      ),
    );
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "data matches-table", "data-matches": "" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { class: "num" }, "#"),
            el("th", {}, gettext("Rule")),
            el("th", {}, gettext("Action")),
            el("th", {}, gettext("Matched")),
            el("th", { class: "num", title: gettext("Characters from the start") }, gettext("Position")),
            el("th", {}, gettext("Masked as")),
          ),
        ),
        el("tbody", {}, ...rows),
      ),
    );
  }

  function renderPreview(container, data) {
    container.replaceChildren();
    container.append(outcome(data));
    if (data.errors.length) {
      container.append(
        errorList(
          data.errors.map(
            (e) =>
              interpolate(
                gettext("%(rule)s does not compile and did not run (%(field)s): %(message)s"),
                { rule: e.rule_name || gettext("A rule"), field: e.field, message: e.message },
                true
              ),
          ),
        ),
      );
    }
    if (data.matches.length) {
      container.append(el("h3", {}, gettext("Matches in the text")), markedText(data), matchTable(data));
    }
    const ran = data.rules.map((r) => r.name);
    container.append(
      el(
        "p",
        { class: "muted small" },
        ran.length
          ? interpolate(
              ngettext("%(count)s rule ran: %(rules)s.", "%(count)s rules ran: %(rules)s.", ran.length),
              { count: ran.length, rules: ran.join(", ") },
              true
            )
          : gettext("No rule ran."),
      ),
    );
  }

  // --- the rule form -------------------------------------------------------

  const ruleForm = document.querySelector("[data-rule-form]");

  function ruleFormUpdate() {
    const checked = ruleForm.querySelector('input[name="kind"]:checked');
    const kind = checked ? checked.value : "";
    const actionInput = ruleForm.querySelector('[name="action"]');
    const action = actionInput ? actionInput.value : "";
    ruleForm.querySelectorAll("[data-kind]").forEach((node) => {
      node.hidden = Boolean(kind) && node.dataset.kind !== kind;
    });
    ruleForm.querySelectorAll("[data-action]").forEach((node) => {
      node.hidden = Boolean(action) && node.dataset.action !== action;
    });
  }

  /* The form's values as the draft rule; disabled inputs (a read-only
   * rule) count too, unlike FormData. */
  function draftRule(form) {
    const draft = {};
    for (const input of form.elements) {
      if (!input.name || input.name === "csrfmiddlewaretoken" || input.tagName === "BUTTON") continue;
      if (input.type === "checkbox") draft[input.name] = input.checked;
      else if (input.type === "radio") {
        if (input.checked) draft[input.name] = input.value;
      } else draft[input.name] = input.value;
    }
    return draft;
  }

  if (ruleForm) {
    ruleForm.addEventListener("change", ruleFormUpdate);
    ruleFormUpdate();
  }

  const tryBox = document.querySelector("[data-try-it]");

  async function tryRule() {
    const status = tryBox.querySelector("[data-try-status]");
    const result = tryBox.querySelector("[data-preview]");
    const text = tryBox.querySelector("[data-try-text]").value;
    if (!text) {
      status.textContent = gettext("Type a sample text first.");
      return;
    }
    const draft = draftRule(ruleForm);
    // "both" and "all" are not places a text can be: try the rule where
    // it runs first.
    const scope = draft.scope === "output" ? "output" : "input";
    const surface = draft.surface && draft.surface !== "all" ? draft.surface : "chat";
    status.textContent = gettext("Running…");
    let answer;
    try {
      answer = await postJSON(tryBox.dataset.url, { text, scope, surface, draft });
    } catch (err) {
      status.textContent = gettext("The server could not be reached.");
      return;
    }
    const data = answer.data || {};
    if (!answer.ok) {
      status.textContent =
        data.error || interpolate(gettext("The trial failed (%(status)s)."), { status: answer.status }, true);
      const problems = [];
      for (const [name, texts] of Object.entries(data.rule_errors || data.errors || {})) {
        for (const t of texts) problems.push(`${fieldLabel(ruleForm, name)}: ${t}`);
      }
      result.replaceChildren(problems.length ? errorList(problems) : "");
      return;
    }
    status.textContent = interpolate(
      gettext("Tried as %(scope)s on %(surface)s; nothing was saved."),
      { scope, surface },
      true
    );
    renderPreview(result, data);
  }

  if (tryBox && ruleForm) {
    tryBox.querySelector("[data-try-button]").addEventListener("click", tryRule);
    tryBox.querySelector("[data-try-text]").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        tryRule();
      }
    });
  }

  // --- the test panel ------------------------------------------------------

  const testForm = document.querySelector("[data-test-form]");
  const testResult = document.querySelector("[data-test-result]");

  async function runTest(event) {
    if (event) event.preventDefault();
    const status = testForm.querySelector("[data-test-status]");
    const body = {
      text: testForm.querySelector('[name="text"]').value,
      scope: testForm.querySelector('[name="scope"]').value,
      surface: testForm.querySelector('[name="surface"]').value,
      rules: [...testForm.querySelectorAll('input[name="rules"]:checked')].map((i) => Number(i.value)),
    };
    if (!body.text) {
      status.textContent = gettext("Type a sample text first.");
      return;
    }
    status.textContent = gettext("Running…");
    let answer;
    try {
      answer = await postJSON(testForm.dataset.url, body);
    } catch (err) {
      status.textContent = gettext("The server could not be reached.");
      return;
    }
    const data = answer.data || {};
    if (!answer.ok) {
      status.textContent =
        data.error || interpolate(gettext("The test failed (%(status)s)."), { status: answer.status }, true);
      return;
    }
    const count = data.matches.length;
    status.textContent = interpolate(
      ngettext("%(count)s match; nothing was stored.", "%(count)s matches; nothing was stored.", count),
      { count },
      true
    );
    renderPreview(testResult.querySelector("[data-preview]"), data);
    testResult.hidden = false;
  }

  if (testForm) {
    testForm.addEventListener("submit", runTest);
    testForm.querySelector('[name="text"]').addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) runTest(event);
    });
    testForm.querySelectorAll("[data-choose]").forEach((button) => {
      button.addEventListener("click", () => {
        const which = button.dataset.choose;
        testForm.querySelectorAll(".rule-checks li").forEach((item) => {
          const box = item.querySelector('input[name="rules"]');
          box.checked = which === "all" || (which === "enabled" && item.dataset.enabled === "1");
        });
      });
    });
  }
})();
