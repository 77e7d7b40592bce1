/* Live refresh of the dashboard's overview and usage pages.
 *
 * Each page embeds its figures as JSON (#overview-initial or
 * #usage-initial) and names its JSON endpoint in the root's data-url.
 * Every 5 s while the tab is visible the page fetches the figures again,
 * rewrites the elements marked data-field="path.in.payload" (formatted by
 * data-format; data-null is the text for a missing value), rebuilds its
 * live tables and redraws its charts. Dashboard notifications ("usage",
 * "versions", "jobs") trigger an early refresh; polling stops while the
 * tab is hidden and resumes with a refresh when it is shown again.
 */
(function () {
  "use strict";
  const REFRESH_MS = 5000;
  const NOTIFY_GAP_MS = 1000;
  const DASH = "—";

  // --- formatting (kept in step with the templates' filters) -------------
  const LANG = document.documentElement.lang || undefined;
  const formats = {
    int: (v) => Number(v).toLocaleString(LANG),
    pct: (v) => `${(v * 100).toFixed(1)} %`,
    secs: (v) => interpolate(gettext("%(n)s s"), { n: Number(v).toFixed(2) }, true),
    speed: (v) => Number(v).toFixed(1),
    list: (v) => (v.length ? v.join(", ") : DASH),
    text: (v) => String(v),
  };
  function format(value, kind, nullText) {
    if (value === null || value === undefined || value === "") return nullText || DASH;
    return (formats[kind] || formats.text)(value);
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return DASH;
    const minutes = Math.floor(seconds / 60);
    const hours = Math.floor(minutes / 60);
    if (minutes < 1) return interpolate(gettext("%(n)s s"), { n: Math.round(seconds) }, true);
    if (hours < 1) return interpolate(gettext("%(n)s min"), { n: minutes }, true);
    if (hours < 48) {
      return interpolate(gettext("%(hours)s h %(minutes)s min"), { hours, minutes: minutes % 60 }, true);
    }
    const days = Math.floor(hours / 24);
    return interpolate(ngettext("%(n)s day", "%(n)s days", days), { n: days }, true);
  }
  function dateTime(iso) {
    return iso ? new Date(iso).toLocaleString(LANG, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }) : DASH;
  }
  // Days arrive as "YYYY-MM-DD" in the site's time zone: read and show
  // them in UTC so the browser's own zone cannot shift them.
  function dayMs(iso) {
    const [y, m, d] = iso.split("-").map(Number);
    return Date.UTC(y, m - 1, d);
  }
  function dayLabel(ms) {
    return new Date(ms).toLocaleDateString(LANG, { month: "short", day: "numeric", timeZone: "UTC" });
  }
  function dayRowLabel(iso) {
    return new Date(dayMs(iso)).toLocaleDateString(LANG, { weekday: "short", month: "short", day: "numeric", timeZone: "UTC" });
  }

  // --- DOM helpers ------------------------------------------------------------
  function lookup(data, path) {
    return path.split(".").reduce((obj, key) => (obj === null || obj === undefined ? undefined : obj[key]), data);
  }
  function fillFields(root, data) {
    root.querySelectorAll("[data-field]").forEach((node) => {
      const value = lookup(data, node.dataset.field);
      if (value === undefined) return; // not part of this payload
      node.textContent = format(value, node.dataset.format, node.dataset.null);
    });
  }
  function cell(row, content, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    row.append(td);
    return td;
  }
  // The words of version and worker states (as the templates' |word).
  const STATE_WORDS = {
    production: pgettext("a version's state", "production"),
    candidate: pgettext("a version's state", "candidate"),
    archived: pgettext("a version's state", "archived"),
    starting: pgettext("a worker's state", "starting"),
    loading: pgettext("a worker's state", "loading"),
    ready: pgettext("a worker's state", "ready"),
    error: pgettext("a worker's state", "error"),
    no_model: pgettext("a worker's state", "no model"),
    stopping: pgettext("a worker's state", "stopping"),
  };
  function badge(state, label) {
    const span = document.createElement("span");
    span.className = `badge ${state}`;
    span.textContent = label || STATE_WORDS[state] || state;
    return span;
  }
  function small(text, className) {
    const div = document.createElement("div");
    div.className = `small ${className || ""}`.trim();
    div.textContent = text;
    return div;
  }
  function fillRows(tbody, rows, build, emptyText, columns) {
    if (!tbody) return;
    const out = rows.map(build);
    if (!out.length) {
      const tr = document.createElement("tr");
      cell(tr, emptyText, "empty").colSpan = columns;
      out.push(tr);
    }
    tbody.replaceChildren(...out);
  }
  function figureCells(tr, row) {
    cell(tr, format(row.answers, "int"), "num");
    cell(tr, format(row.prompt_tokens, "int"), "num");
    cell(tr, format(row.completion_tokens, "int"), "num");
    cell(tr, format(row.errors, "int"), "num");
    cell(tr, format(row.error_rate, "pct"), "num");
    cell(tr, format(row.ttft_p50_s, "secs"), "num");
    cell(tr, format(row.ttft_p95_s, "secs"), "num");
    cell(tr, format(row.tokens_per_s, "speed"), "num");
    cell(tr, format(row.thumbs_up_rate, "pct"), "num");
  }
  function setStatus(node, state, text) {
    if (!node) return;
    node.classList.remove("stale", "paused");
    if (state !== "ok") node.classList.add(state);
    node.textContent = text;
  }

  // --- polling ----------------------------------------------------------------
  function livePoller(url, apply, statusNode) {
    let timer = null;
    let inFlight = false;
    let last = 0;
    let pending = null;
    async function refresh() {
      if (inFlight) return;
      inFlight = true;
      last = Date.now();
      try {
        const response = await fetch(url, {
          headers: { Accept: "application/json" },
          credentials: "same-origin",
          cache: "no-store",
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        apply(await response.json());
        setStatus(
          statusNode,
          "ok",
          interpolate(gettext("Updated %(time)s"), { time: new Date().toLocaleTimeString(LANG) }, true)
        );
      } catch (err) {
        setStatus(statusNode, "stale", gettext("Live figures unavailable; retrying"));
      } finally {
        inFlight = false;
      }
    }
    // Notifications can come in bursts (training progress): refresh at
    // most once a second, the last one always.
    function soon() {
      if (pending) return;
      const wait = Math.max(0, last + NOTIFY_GAP_MS - Date.now());
      pending = setTimeout(() => { pending = null; refresh(); }, wait);
    }
    function start() {
      stop();
      timer = setInterval(refresh, REFRESH_MS);
    }
    function stop() {
      if (timer) clearInterval(timer);
      timer = null;
    }
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        stop();
        setStatus(statusNode, "paused", gettext("Paused while the tab is hidden"));
      } else {
        refresh();
        start();
      }
    });
    if (!document.hidden) start();
    return soon;
  }
  function initial(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // --- workers (usage page) ------------------------------------------------------
  function workerRow(w) {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.id;
    const who = document.createElement("div");
    const strong = document.createElement("strong");
    strong.textContent = w.id;
    const pid = w.pid ? " · " + interpolate(gettext("pid %(pid)s"), { pid: w.pid }, true) : "";
    who.append(strong, small(`${w.host || "?"}${pid}`, "muted"));
    cell(tr, who);
    const state = document.createElement("div");
    state.append(badge(w.state));
    if (w.error) state.append(small(w.error, "worker-error"));
    cell(tr, state);
    cell(tr, format(w.loaded_versions, "list"));
    cell(tr, format(w.loading_versions, "list"));
    cell(tr, `${w.device || DASH}${w.dtype ? ` · ${w.dtype}` : ""}`);
    cell(tr, format(w.capacity, "int"), "num");
    cell(tr, format(w.running, "int"), "num");
    cell(tr, format(w.queued, "int"), "num");
    cell(
      tr,
      w.heartbeat_age_s === null
        ? DASH
        : interpolate(gettext("%(n)s s"), { n: Number(w.heartbeat_age_s).toFixed(1) }, true),
      "num"
    );
    cell(tr, duration(w.uptime_s));
    return tr;
  }

  // --- usage page ------------------------------------------------------------------
  function drawUsageCharts(data) {
    const days = data.days || [];
    const labels = days.map((r) => dayLabel(dayMs(r.day)));
    const names = [...new Set(days.flatMap((r) => Object.keys(r.by_version || {})))].sort();
    const requests = names.length
      ? names.map((name) => ({ name, values: days.map((r) => r.by_version[name] || 0) }))
      : [{ name: "", values: days.map((r) => r.answers) }];
    Charts.bar(document.getElementById("chart-requests"), {
      labels, series: requests, stacked: true, yLabel: gettext("requests"),
    });
    Charts.bar(document.getElementById("chart-tokens"), {
      labels,
      series: [
        { name: gettext("tokens in"), values: days.map((r) => r.prompt_tokens) },
        { name: gettext("tokens out"), values: days.map((r) => r.completion_tokens) },
      ],
      yLabel: gettext("tokens"),
    });
    // x is the day's index, so ticks fall on days as the bars' labels do.
    const points = (key) => days.map((r, i) => [i, r[key]]).filter((p) => p[1] !== null);
    Charts.line(document.getElementById("chart-ttft"), {
      series: [
        { name: "p50", points: points("ttft_p50_s") },
        { name: "p95", points: points("ttft_p95_s"), dashed: true },
      ],
      xFormat: (i) => (Number.isInteger(i) && labels[i] !== undefined ? labels[i] : ""),
      yLabel: gettext("seconds"),
      emptyText: gettext("No timed answers in this window."),
    });
    Charts.bar(document.getElementById("chart-errors"), {
      labels,
      series: [{ name: gettext("errors"), values: days.map((r) => r.errors), color: "#e5534b" }],
      yLabel: gettext("errors"),
    });
  }

  function applyUsage(data) {
    fillFields(document, data);
    const live = data.live;
    const down = document.querySelector("[data-redis-down]");
    if (down) down.hidden = live.redis_ok;
    const q = (name) => document.querySelector(`tbody[data-rows="${name}"]`);
    fillRows(q("days"), data.days, (row) => {
      const tr = document.createElement("tr");
      tr.dataset.day = row.day;
      cell(tr, dayRowLabel(row.day));
      figureCells(tr, row);
      return tr;
    }, gettext("No days."), 10);
    fillRows(q("versions"), data.versions, (row) => {
      const tr = document.createElement("tr");
      tr.dataset.version = row.id;
      cell(tr, row.name);
      cell(tr, badge(row.state));
      figureCells(tr, row);
      return tr;
    }, gettext("No answers in this window."), 11);
    fillRows(q("top_users"), data.top_users, (row) => {
      const tr = document.createElement("tr");
      if (row.kind === "visitors") {
        // Widget visitors have no account: one row per site.
        tr.dataset.site = row.site_id === null ? "" : row.site_id;
        const who = document.createElement("div");
        const count = interpolate(
          ngettext("%(count)s visitor without an account", "%(count)s visitors without an account", row.visitors),
          { count: format(row.visitors, "int") },
          true
        );
        who.append(row.label, small(count, "muted"));
        cell(tr, who);
      } else if (row.kind === "anonymised") {
        tr.dataset.anonymised = "";
        const who = document.createElement("div");
        who.append(row.label, small(gettext("retention removed who had them"), "muted"));
        cell(tr, who);
      } else {
        tr.dataset.user = row.user_id;
        cell(tr, row.label);
      }
      cell(tr, format(row.requests, "int"), "num");
      cell(tr, format(row.prompt_tokens, "int"), "num");
      cell(tr, format(row.completion_tokens, "int"), "num");
      cell(tr, format(row.conversations, "int"), "num");
      cell(tr, dateTime(row.last_active));
      return tr;
    }, gettext("No answers in this window."), 6);
    fillRows(q("workers"), live.workers, workerRow,
      live.redis_ok ? gettext("No inference worker is running.") : gettext("Unknown: Redis is unavailable."), 10);
    drawUsageCharts(data);
  }

  function initUsage(root) {
    // Picking a day means a custom range, whatever the period said.
    const period = document.getElementById("id_period");
    ["id_start", "id_end"].forEach((id) => {
      const input = document.getElementById(id);
      if (input && period) input.addEventListener("change", () => { period.value = "custom"; });
    });
    const data = initial("usage-initial");
    if (data) drawUsageCharts(data);
    const refresh = livePoller(root.dataset.url + location.search, applyUsage,
      document.querySelector("[data-live-status]"));
    ["usage", "versions", "reconnected"].forEach((topic) => DashboardSocket.on(topic, refresh));
  }

  // --- overview ----------------------------------------------------------------------
  function drawSparkline(data) {
    const node = document.getElementById("chart-hours");
    if (!node) return;
    Charts.line(node, {
      series: [{ name: gettext("requests"), points: (data.hours || []).map((h) => [Date.parse(h.hour), h.answers]) }],
      time: true, yLabel: gettext("requests"),
      xFormat: (ms) => new Date(ms).toLocaleTimeString(LANG, { hour: "2-digit", minute: "2-digit" }),
    });
  }

  function jobRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const link = document.createElement("a");
    link.href = job.url;
    link.textContent = `${job.kind_label} #${job.id}`;
    cell(tr, link);
    cell(tr, badge(job.state, job.state_label));
    const progress = document.createElement("span");
    if (job.percent === null) {
      progress.className = "muted small";
      progress.textContent = DASH;
    } else {
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = job.percent;
      const text = document.createElement("span");
      text.className = "small";
      const steps =
        job.step !== null && job.total_steps
          ? " · " + interpolate(gettext("step %(step)s/%(total)s"), { step: job.step, total: job.total_steps }, true)
          : "";
      text.textContent = ` ${Math.round(job.percent)} %${steps}`;
      progress.append(bar, text);
    }
    cell(tr, progress);
    cell(tr, job.dataset);
    cell(tr, job.base_version);
    return tr;
  }

  function applyOverview(data) {
    fillFields(document, data);
    const live = data.live;
    const none = document.querySelector("[data-no-worker]");
    if (none) {
      none.hidden = live.workers_total > 0;
      none.textContent = live.redis_ok
        ? gettext("No inference worker is running: answers wait in the queue.")
        : gettext("Redis is unavailable.");
    }
    fillRows(document.querySelector('tbody[data-rows="jobs"]'),
      [...data.jobs.active, ...data.jobs.recent], jobRow, gettext("No training job yet."), 5);
    drawSparkline(data);
  }

  function initOverview(root) {
    const data = initial("overview-initial");
    if (data) drawSparkline(data);
    const refresh = livePoller(root.dataset.url, applyOverview,
      document.querySelector("[data-live-status]"));
    DashboardSocket.on("jobs", refresh);
    DashboardSocket.on("usage", refresh);
    DashboardSocket.on("reconnected", refresh);
    // Production or the canary changed: the page's structure changes too.
    DashboardSocket.on("versions", () => location.reload());
  }

  const usageRoot = document.getElementById("usage-page");
  if (usageRoot) initUsage(usageRoot);
  const overviewRoot = document.getElementById("overview-page");
  if (overviewRoot) initOverview(overviewRoot);
})();
