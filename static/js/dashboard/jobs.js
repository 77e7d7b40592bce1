/* The training area: live job list and job page, the new-job form's kind
 * switch, confirmations and local times.
 *
 * Notifications over DashboardSocket only say that a job changed; the
 * page then reads the job's data.json (at most once a second a job) or,
 * when jobs came or went, the list page itself, and redraws from that.
 */
(function () {
  "use strict";

  const DASH = "—";

  // --- helpers -------------------------------------------------------------

  const throttle = DashboardSocket.throttle;

  async function getJSON(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  const num = (v) => typeof v === "number" && isFinite(v);
  const fmt = {
    loss: (v) => (num(v) ? v.toFixed(4) : DASH),
    lr: (v) => (num(v) ? v.toExponential(2).replace(/e([+-])(\d)$/, "e$10$2") : DASH),
    rate: (v) => (num(v) ? v.toFixed(2) : DASH),
    int: (v) => (num(v) ? Math.round(v).toLocaleString(document.documentElement.lang || undefined) : DASH),
    one: (v) => (num(v) ? v.toFixed(1) : DASH),
    two: (v) => (num(v) ? v.toFixed(2) : DASH),
  };
  const pad = (n) => String(n).padStart(2, "0");
  function localTime(iso, seconds) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? ":" + pad(d.getSeconds()) : ""}`;
    return `${day} ${time}`;
  }
  /* Server pages print times in the server's zone; show the reader's. */
  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((node) => {
      if (node.dataset.local) return;
      const seconds = node.textContent.trim().length > 16;
      const text = localTime(node.getAttribute("datetime"), seconds);
      if (text) {
        node.textContent = text;
        node.title = new Date(node.getAttribute("datetime")).toString();
        node.dataset.local = "1";
      }
    });
  }
  function timeNode(iso, seconds) {
    const node = document.createElement("time");
    node.setAttribute("datetime", iso);
    node.textContent = localTime(iso, seconds);
    node.title = new Date(iso).toString();
    node.dataset.local = "1";
    return node;
  }
  const sameTime = (a, b) => new Date(a).getTime() === new Date(b).getTime();
  function setText(root, name, text) {
    root.querySelectorAll(`[data-cell="${name}"]`).forEach((node) => {
      if (node.textContent !== text) node.textContent = text;
    });
  }
  function setTime(root, name, iso, seconds) {
    root.querySelectorAll(`[data-cell="${name}"]`).forEach((node) => {
      if (!iso) { node.textContent = DASH; return; }
      const current = node.querySelector("time");
      if (current && sameTime(current.getAttribute("datetime"), iso)) return;
      node.replaceChildren(timeNode(iso, seconds));
    });
  }
  function setState(root, data) {
    root.querySelectorAll('[data-cell="state"]').forEach((badge) => {
      badge.className = `badge ${data.state}`;
      badge.textContent = data.state_display;
    });
  }
  function setProgress(root, data) {
    root.querySelectorAll('[data-cell="progress"]').forEach((bar) => {
      const percent = num(data.percent) ? data.percent : 0;
      bar.setAttribute("aria-valuenow", percent.toFixed(1));
      bar.setAttribute(
        "aria-label",
        interpolate(gettext("Step %(step)s of %(total)s"), { step: data.step, total: data.total_steps }, true)
      );
      bar.classList.toggle("done", !!data.finished);
      const fill = bar.querySelector(".progress-fill");
      fill.className = `progress-fill ${data.state}`;
      fill.style.width = `${percent.toFixed(1)}%`;
      bar.querySelector(".progress-text").textContent = `${data.step} / ${data.total_steps}`;
    });
  }
  function showLive(indicator) {
    if (!indicator) return;
    DashboardSocket.on("status", (status) => {
      indicator.hidden = false;
      indicator.textContent = status.connected ? gettext("● live") : gettext("○ reconnecting…");
      indicator.classList.toggle("live", !!status.connected);
    });
  }

  // --- job list --------------------------------------------------------------

  function jobList(root) {
    const body = root.querySelector("[data-jobs-body]");
    const fetchers = new Map();
    const rowFor = (id) => body.querySelector(`tr[data-job="${Number(id)}"]`);

    function updateRow(row, data) {
      setState(row, data);
      setProgress(row, data);
      setText(row, "eta", data.eta || DASH);
      setText(row, "loss", fmt.loss(data.progress.loss));
      setText(row, "eval_loss", fmt.loss(data.progress.eval_loss));
      setTime(row, "finished_at", data.finished_at, false);
      const cancelling = row.querySelector('[data-cell="cancelling"]');
      if (cancelling && data.finished) cancelling.remove();
      row.dataset.finished = data.finished ? "1" : "0";
    }
    function fetcherFor(id) {
      if (!fetchers.has(id)) {
        fetchers.set(id, throttle(async () => {
          const row = rowFor(id);
          if (!row) return;
          updateRow(row, await getJSON(`${row.dataset.url}?brief=1`));
        }, 1000));
      }
      return fetchers.get(id);
    }
    // A job that starts, ends or appears can change which rows the page
    // (filtered, paged) shows and in what order: read the page again.
    const reloadList = throttle(async () => {
      const response = await fetch(location.href, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
        cache: "no-store",
      });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const freshBody = page.querySelector("[data-jobs-body]");
      if (freshBody) body.replaceChildren(...freshBody.children);
      const filter = root.querySelector("[data-state-filter]");
      const freshFilter = page.querySelector("[data-state-filter]");
      if (filter && freshFilter) filter.replaceChildren(...freshFilter.children);
      localizeTimes(root);
    }, 1000);

    DashboardSocket.on("jobs", (payload) => {
      if (payload.type === "training.job") reloadList();
      else if (payload.job && rowFor(payload.job)) fetcherFor(String(payload.job))();
    });
    DashboardSocket.on("reconnected", reloadList);
    showLive(root.querySelector("[data-live]"));
  }

  // --- job page ----------------------------------------------------------------

  function jobDetail(root) {
    const id = root.dataset.job;
    const url = root.dataset.url;
    const log = root.querySelector("[data-log]");
    const follow = root.querySelector("[data-follow]");
    const lossChart = root.querySelector('[data-chart="loss"]');
    const lrChart = root.querySelector('[data-chart="lr"]');
    const accuracyChart = root.querySelector('[data-chart="accuracy"]');
    const marginChart = root.querySelector('[data-chart="margin"]');
    const checkpoints = root.querySelector("[data-checkpoints]");
    let curveKey = "";
    let checkpointsKey = "";
    let done = false;

    function drawCharts(curve) {
      const key = ["loss", "eval_loss", "lr", "accuracy", "eval_accuracy", "margin", "eval_margin"]
        .map((name) => { const s = curve[name] || []; return `${s.length}:${JSON.stringify(s[s.length - 1] || null)}`; })
        .join("|");
      if (key === curveKey) return;
      curveKey = key;
      if (typeof Charts === "undefined") return;
      Charts.line(lossChart, {
        series: [
          { name: gettext("train loss"), points: curve.loss || [] },
          { name: gettext("eval loss"), points: curve.eval_loss || [], dots: true },
        ],
        xLabel: gettext("step"),
        yLabel: gettext("loss"),
        label: gettext("Train and eval loss by step"),
        emptyText: gettext("No steps yet."),
      });
      Charts.line(lrChart, {
        series: [{ name: gettext("learning rate"), points: curve.lr || [] }],
        xLabel: gettext("step"),
        yLabel: gettext("lr"),
        label: gettext("Learning rate by step"),
        yFormat: (v) => (v === 0 ? "0" : v.toExponential(1)),
        emptyText: gettext("No steps yet."),
      });
      if (accuracyChart) {
        Charts.line(accuracyChart, {
          series: [
            { name: gettext("train accuracy"), points: curve.accuracy || [] },
            { name: gettext("held-out accuracy"), points: curve.eval_accuracy || [], dots: true },
          ],
          xLabel: gettext("step"),
          yLabel: gettext("accuracy"),
          label: gettext("Preference accuracy by step, training and held-out pairs"),
          yFormat: (v) => `${Math.round(v * 100)}%`,
          emptyText: gettext("No steps yet."),
        });
      }
      if (marginChart) {
        Charts.line(marginChart, {
          series: [
            { name: gettext("train margin"), points: curve.margin || [] },
            { name: gettext("held-out margin"), points: curve.eval_margin || [], dots: true },
          ],
          xLabel: gettext("step"),
          yLabel: gettext("margin"),
          label: gettext("Reward margin by step, training and held-out pairs"),
          emptyText: gettext("No steps yet."),
        });
      }
    }

    function drawLog(data) {
      const text = data.log || gettext("No output yet.");
      if (log.textContent !== text) {
        log.textContent = text;
        if (follow && follow.checked) log.scrollTop = log.scrollHeight;
      }
      const note = root.querySelector('[data-cell="log-truncated"]');
      if (note) note.hidden = !data.log_truncated;
    }

    function cell(text, className) {
      const td = document.createElement("td");
      if (className) td.className = className;
      td.textContent = text;
      return td;
    }
    function drawCheckpoints(rows) {
      const key = JSON.stringify(rows);
      if (key === checkpointsKey) return;
      checkpointsKey = key;
      if (!rows.length) return; // keep the server's "no checkpoint yet" row
      checkpoints.replaceChildren(...rows.map((row) => {
        const tr = document.createElement("tr");
        const name = document.createElement("td");
        const link = document.createElement("a");
        link.href = row.url;
        link.textContent = row.name;
        name.appendChild(link);
        const state = document.createElement("td");
        const badge = document.createElement("span");
        badge.className = `badge ${row.state}`;
        badge.textContent = row.state_display;
        state.appendChild(badge);
        if (!row.evaluated) {
          const note = document.createElement("span");
          note.className = "muted small";
          note.textContent = ` ${row.evaluation || gettext("evaluating")}`;
          state.appendChild(note);
        }
        tr.append(
          name,
          state,
          cell(num(row.step) ? String(row.step) : DASH, "num"),
          cell(fmt.loss(row.train_loss), "num"),
          cell(fmt.loss(row.eval_loss), "num"),
          cell(fmt.two(row.perplexity), "num"),
          cell(fmt.one(row.tokens_per_s), "num"),
        );
        return tr;
      }));
    }

    function drawNote(data) {
      const note = root.querySelector('[data-cell="progress-note"]');
      if (!note) return;
      if (data.state === "queued") {
        note.textContent = data.note || gettext("Waiting for a training worker.");
      } else if (data.state === "running") {
        note.textContent = data.cancel_requested
          ? gettext("Cancel requested: stopping at the next step.")
          : data.eta
            ? interpolate(gettext("About %(eta)s left."), { eta: data.eta }, true)
            : gettext("Running.");
      } else if (data.finished_at) {
        const current = note.querySelector("time");
        if (current && sameTime(current.getAttribute("datetime"), data.finished_at)) return;
        // "Ended <time> after <duration>.", the time an element of its own.
        const sentence = data.duration
          ? interpolate(gettext("Ended %(time)s after %(duration)s."), { time: "\u0000", duration: data.duration }, true)
          : interpolate(gettext("Ended %(time)s."), { time: "\u0000" }, true);
        const [before, after] = sentence.split("\u0000");
        note.replaceChildren(before, timeNode(data.finished_at, false), after);
      }
    }

    function drawFinished(data) {
      const node = root.querySelector('[data-cell="finished_at"]');
      if (!node || !data.finished_at) return;
      const current = node.querySelector("time");
      if (current && sameTime(current.getAttribute("datetime"), data.finished_at)) return;
      node.replaceChildren(timeNode(data.finished_at, true));
      if (data.duration) {
        const span = document.createElement("span");
        span.className = "muted";
        span.textContent = `(${data.duration})`;
        node.append(" ", span);
      }
    }

    function drawCancel(data) {
      const form = root.querySelector("[data-cancel-form]");
      if (!form) return;
      if (data.finished) { form.remove(); return; }
      const button = form.querySelector("button");
      if (data.cancel_requested) {
        button.disabled = true;
        button.textContent = gettext("Cancelling…");
      }
    }

    function drawEvaluations(rows) {
      const list = root.querySelector("[data-evaluations]");
      if (!list) return;
      list.hidden = !rows.length;
      list.replaceChildren(...rows.map((row) => {
        const item = document.createElement("li");
        item.className = `evaluation ${row.state}`;
        item.dataset.evaluation = String(row.id);
        const what = document.createElement("span");
        what.className = "what";
        what.textContent = interpolate(
          row.finished ? gettext("Measured %(what)s:") : gettext("Measuring %(what)s:"),
          { what: row.what },
          true
        );
        const text = document.createElement("span");
        text.className = "muted";
        text.dataset.evaluationText = "";
        text.textContent = row.text;
        item.append(what, " ", text);
        if (!row.finished) {
          const bar = document.createElement("span");
          bar.className = "mini-progress";
          bar.setAttribute("aria-hidden", "true");
          const fill = document.createElement("span");
          fill.className = "progress-fill running";
          fill.style.width = `${num(row.percent) ? row.percent : 0}%`;
          bar.append(fill);
          item.append(" ", bar);
        }
        return item;
      }));
    }

    function render(data) {
      setState(root, data);
      setText(root, "state-text", data.state_display);
      setProgress(root, data);
      setText(root, "step", String(data.step));
      setText(root, "total_steps", String(data.total_steps));
      setText(root, "loss", fmt.loss(data.progress.loss));
      setText(root, "eval_loss", fmt.loss(data.progress.eval_loss));
      setText(root, "lr", fmt.lr(data.progress.lr));
      const accuracy = data.progress.eval_accuracy;
      setText(root, "eval_accuracy", typeof accuracy === "number" ? `${Math.round(accuracy * 100)}%` : DASH);
      const margin = data.progress.eval_margin;
      setText(root, "eval_margin", typeof margin === "number" ? margin.toFixed(3) : DASH);
      setText(root, "examples_per_s", fmt.rate(data.progress.examples_per_s));
      setText(root, "eta", data.eta || DASH);
      setText(root, "attempts", String(data.attempts));
      setTime(root, "started_at", data.started_at, true);
      drawFinished(data);
      const error = root.querySelector('[data-cell="error"]');
      if (error) {
        error.hidden = !data.error;
        setText(root, "error-text", data.error || "");
      }
      drawNote(data);
      drawCancel(data);
      drawCharts(data.curve || {});
      drawLog(data);
      drawCheckpoints(data.checkpoints || []);
      drawEvaluations(data.evaluations || []);
    }

    if (follow) {
      // Scrolling up to read stops following; scrolling back down resumes.
      log.addEventListener("scroll", () => {
        follow.checked = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
      });
      follow.addEventListener("change", () => {
        if (follow.checked) log.scrollTop = log.scrollHeight;
      });
    }

    const initial = JSON.parse(document.getElementById("job-data").textContent);
    render(initial);
    log.scrollTop = log.scrollHeight;
    // A finished job whose measurements are done does not change any more.
    if (initial.finished && !initial.evaluating) return;

    const refresh = throttle(async () => {
      if (done) return;
      const data = await getJSON(url);
      render(data);
      if (data.finished && !data.evaluating) {
        done = true;
        const live = root.querySelector("[data-live]");
        if (live) live.remove();
      }
    }, 1000);
    DashboardSocket.on(`job.${id}`, () => { if (!done) refresh(); });
    DashboardSocket.on("reconnected", () => { if (!done) refresh(); });
    showLive(root.querySelector("[data-live]"));
  }

  // --- new job form ------------------------------------------------------------

  function jobForm(form) {
    let shownKind = null;
    function defaults(kind) {
      // An input whose default depends on the kind takes the new kind's
      // while it still holds the previous kind's (not one typed in).
      form.querySelectorAll("[data-defaults]").forEach((input) => {
        const by = JSON.parse(input.dataset.defaults);
        if (shownKind && String(by[shownKind]) === input.value && kind in by) input.value = String(by[kind]);
      });
      form.querySelectorAll("[data-default-texts]").forEach((span) => {
        const texts = JSON.parse(span.dataset.defaultTexts);
        if (kind in texts) span.textContent = interpolate(gettext("Default %(value)s."), { value: texts[kind] }, true);
      });
      shownKind = kind;
    }
    function apply() {
      const checked = form.querySelector('input[name="kind"]:checked');
      const kind = checked ? checked.value : "finetune";
      defaults(kind);
      form.querySelectorAll("[data-kinds]").forEach((node) => {
        const on = node.dataset.kinds.split(" ").includes(kind);
        node.hidden = !on;
        // A disabled input is not sent, so the server never sees a value
        // the chosen kind does not use.
        node.querySelectorAll("input, select, textarea").forEach((input) => { input.disabled = !on; });
      });
      const lora = form.querySelector('input[name="lora"]');
      const loraOn = !!lora && lora.checked && !lora.disabled;
      form.querySelectorAll('[data-field="lora_r"], [data-field="lora_alpha"]').forEach((node) => {
        node.classList.toggle("inactive", !loraOn);
      });
    }
    form.addEventListener("change", (event) => {
      if (event.target.name === "kind" || event.target.name === "lora") apply();
    });
    apply();
  }

  // --- everywhere --------------------------------------------------------------

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  localizeTimes(document);
  const list = document.querySelector("[data-jobs-list]");
  if (list) jobList(list);
  const detail = document.querySelector("[data-job-detail]");
  if (detail) jobDetail(detail);
  const form = document.querySelector("[data-job-form]");
  if (form) jobForm(form);
})();
