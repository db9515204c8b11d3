// testrack's HTML report: draws the data testrack wrote into this file. No network, no framework.
// Rows and lanes are drawn only when they are on screen, so a run of any size stays fast.
"use strict";
(function () {
  const ROW_H = 24;          // a row of the tests and failures lists
  const LANE_H = 22;         // a timeline lane
  const AXIS_H = 24;         // the timeline's time axis
  const LABEL_W = 150;       // the timeline's lane labels
  const HISTORY_SHOWN = 10;  // earlier runs in the tests list's history column

  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // ------------------------------------------------------------------ data

  function bytesOf(id) {
    const text = atob($(id).textContent.trim());
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  async function inflate(id) {
    const stream = new Blob([bytesOf(id)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return JSON.parse(await new Response(stream).text());
  }

  let D = null;                 // the run
  let details = null;           // failure texts and captured output, decoded on first demand
  let detailsLoading = null;
  const S = {                   // what the person chose
    view: "tests", outcomes: null, device: -1, text: "",
    selected: -1, focus: -1, t0: 0, t1: 1,
  };
  let byTest = null, byTestStart = null;   // results grouped per test (CSR)
  let byLane = null, byLaneStart = null;   // results per lane, by start time
  let haystack = null;                     // per test: lower-case id and messages, for the text filter
  let shownTests = new Int32Array(0), shownFailures = new Int32Array(0), shownLanes = [];
  let failingSet = null;

  function loadDetails() {
    if (!detailsLoading) detailsLoading = inflate("report-details").then((d) => (details = d));
    return detailsLoading;
  }

  function group(keys, count, order) {
    const start = new Int32Array(count + 1);
    for (let i = 0; i < keys.length; i++) if (keys[i] >= 0) start[keys[i] + 1]++;
    for (let k = 0; k < count; k++) start[k + 1] += start[k];
    const fill = start.slice(0, count);
    const items = new Int32Array(start[count]);
    const seq = order || keys.map((_, i) => i);
    for (const i of seq) if (keys[i] >= 0) items[fill[keys[i]]++] = i;
    return [items, start];
  }

  function index() {
    const R = D.results;
    [byTest, byTestStart] = group(R.test, D.tests.length);
    const order = R.start.map((_, i) => i).sort((a, b) => R.start[a] - R.start[b]);
    [byLane, byLaneStart] = group(R.lane, D.lanes.length, order);
    failingSet = new Set(D.failing);
    S.outcomes = new Set(D.outcomes.map((_, i) => i));
    S.t1 = Math.max(D.span, 1);
  }

  const final = (i) => !(D.results.flags[i] & 1);
  const outcomeName = (o) => D.outcomes[o] || "other";
  const cls = (o) => "o-" + (["passed", "failed", "error", "crashed", "timeout", "skipped", "xfailed", "xpassed",
    "unmatched", "device_error"].includes(outcomeName(o)) ? outcomeName(o) : "other");

  // ------------------------------------------------------------------ words and numbers

  function seconds(us) {
    const s = us / 1e6;
    if (s < 0.001) return (us / 1000).toFixed(2) + " ms";
    if (s < 1) return (us / 1000).toFixed(0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    const m = Math.floor(s / 60);
    return m + " min " + Math.round(s - 60 * m) + " s";
  }
  function when(stamp) {
    if (!stamp) return "-";
    const d = new Date(stamp * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  const thousands = (n) => n.toLocaleString("en-US");

  // ------------------------------------------------------------------ summary

  function drawSummary() {
    const run = D.run, sum = D.summary;
    document.title = `testrack run ${run.id}: ${sum.counts}`;
    $("heading").textContent = `testrack run ${run.id}`;
    const verdict = $("verdict");
    if (!run.outcome) {
      verdict.textContent = "did not finish";
      verdict.className = "open";
      verdict.title = "no end was recorded: the results below are those stored before it stopped";
    } else {
      verdict.textContent = run.outcome.replace(/_/g, " ");
      verdict.className = run.outcome === "ok" ? "ok" : "bad";
    }
    const took = run.finished ? seconds((run.finished - run.started) * 1e6) : "no end recorded";
    $("meta").textContent = `${run.mode} mode on ${run.rack} · ${D.devices.length} device${D.devices.length === 1 ? "" : "s"}, ` +
      `${sum.slots} slot${sum.slots === 1 ? "" : "s"} · started ${when(run.started)} · took ${took}`;
    $("command").textContent = run.command;
    $("command").title = `${run.command}\nrun uid ${run.uid}`;
    const retried = sum.retried ? ` (and ${thousands(sum.retried)} attempt${sum.retried === 1 ? "" : "s"} retried)` : "";
    $("counts").textContent = `${thousands(sum.results)} results of ${thousands(sum.tests)} tests: ${sum.counts}${retried}`;
    const box = $("devices");
    box.replaceChildren();
    for (const dev of sum.devices) {
      const line = el("span", "device-line");
      line.append(el("b", null, dev.name + ": "), el("span", dev.verdict === "ok" ? "ok" : "bad", dev.verdict),
        " - " + dev.counts);
      if (dev.environment) line.append(el("span", "environment", ` (${dev.environment})`));
      box.append(line);
    }
  }

  // ------------------------------------------------------------------ filters

  function drawFilters() {
    const counts = new Array(D.outcomes.length).fill(0);
    for (let i = 0; i < D.results.outcome.length; i++) counts[D.results.outcome[i]]++;
    const chips = $("chips");
    chips.replaceChildren();
    D.outcomes.forEach((name, o) => {
      if (!counts[o]) return;
      const chip = el("button", "chip " + cls(o), `${name.replace("_", " ")} ${thousands(counts[o])}`);
      chip.type = "button";
      chip.dataset.outcome = name;
      chip.setAttribute("aria-pressed", "true");
      chip.addEventListener("click", () => {
        if (S.outcomes.has(o)) S.outcomes.delete(o); else S.outcomes.add(o);
        chip.setAttribute("aria-pressed", String(S.outcomes.has(o)));
        refresh();
      });
      chips.append(chip);
    });
    const select = $("device");
    D.devices.forEach((name, d) => { const opt = el("option", null, name); opt.value = String(d); select.append(opt); });
    select.addEventListener("change", () => { S.device = Number(select.value); refresh(); });
    $("text").addEventListener("input", (e) => { S.text = e.target.value.trim().toLowerCase(); refresh(); });
    const setAll = (pick) => {
      S.outcomes = new Set(D.outcomes.map((_, o) => o).filter(pick));
      for (const chip of chips.children) chip.setAttribute("aria-pressed", String(S.outcomes.has(D.outcomes.indexOf(chip.dataset.outcome))));
      refresh();
    };
    $("only-failing").addEventListener("click", () => setAll((o) => failingSet.has(o)));
    $("all-outcomes").addEventListener("click", () => setAll(() => true));
  }

  function buildHaystack() {
    const R = D.results;
    haystack = D.tests.map((id, t) => {
      let text = id;
      for (let k = byTestStart[t]; k < byTestStart[t + 1]; k++) {
        const m = R.message[byTest[k]];
        if (m >= 0) text += "\n" + D.messages[m];
      }
      return text.toLowerCase();
    });
  }

  function matches(i) {
    const R = D.results;
    return S.outcomes.has(R.outcome[i]) && (S.device < 0 || R.device[i] === S.device);
  }

  function applyFilters() {
    const R = D.results;
    if (S.text && !haystack) buildHaystack();
    const tests = [], failures = [];
    for (let t = 0; t < D.tests.length; t++) {
      if (S.text && !haystack[t].includes(S.text)) continue;
      let hit = false;
      for (let k = byTestStart[t]; k < byTestStart[t + 1]; k++) {
        const i = byTest[k];
        if (!matches(i)) continue;
        if (final(i)) hit = true;
        if (failingSet.has(R.outcome[i]) || !final(i)) failures.push(i);
      }
      if (hit) tests.push(t);
    }
    shownTests = Int32Array.from(tests);
    shownFailures = Int32Array.from(failures);
    shownLanes = [];
    D.lanes.forEach(([, d], lane) => { if (S.device < 0 || d === S.device) shownLanes.push(lane); });
  }

  function refresh() {
    applyFilters();
    drawView();
  }

  // ------------------------------------------------------------------ virtual lists

  function virtualList(scroller, box, count, draw) {
    box.style.position = "relative";
    box.style.height = count * ROW_H + "px";
    const top = Math.max(0, Math.floor((scroller.scrollTop - 26) / ROW_H) - 5);
    const bottom = Math.min(count, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW_H) + 5);
    const rows = [];
    for (let n = top; n < bottom; n++) {
      const row = draw(n);
      row.style.top = n * ROW_H + "px";
      rows.push(row);
    }
    box.replaceChildren(...rows);
  }

  function columns() {
    if (D.run.mode === "each") {
      const devices = S.device < 0 ? D.devices.map((_, d) => d) : [S.device];
      return { devices, template: `minmax(320px, 1fr) repeat(${devices.length}, 84px) 76px 130px` };
    }
    return { devices: null, template: "minmax(320px, 1fr) 84px 110px 60px 76px 130px" };
  }

  function drawTestsHead() {
    const head = $("tests-head"), cols = columns();
    head.style.gridTemplateColumns = cols.template;
    const names = cols.devices ? ["test", ...cols.devices.map((d) => D.devices[d]), "time", "history"]
      : ["test", "outcome", "device", "worker", "time", "history"];
    head.replaceChildren(...names.map((n, k) => el("span", k === names.length - 2 ? "num" : null, n)));
    head.style.minWidth = cols.devices ? `${320 + 84 * cols.devices.length + 240}px` : "800px";
  }

  function historyCell(t) {
    const box = el("span", "hist");
    const runs = D.history.runs.length, shown = Math.min(runs, HISTORY_SHOWN);
    for (let k = shown - 1; k >= 0; k--) {
      const o = D.history.outcomes[k][t];
      const mark = el("i", o >= 0 ? cls(o) : null);
      mark.title = `run ${D.history.runs[k].id}: ${o >= 0 ? outcomeName(o) : "not run"}`;
      box.append(mark);
    }
    const now = el("i", cls(worstOf(t)) + " now");
    now.title = `run ${D.run.id} (this run): ${outcomeName(worstOf(t))}`;
    box.append(now);
    return box;
  }

  function worstOf(t) {      // the worst final outcome of a test over its devices (D.rank: lower is worse)
    let worst = -1;
    for (let k = byTestStart[t]; k < byTestStart[t + 1]; k++) {
      const i = byTest[k], o = D.results.outcome[i];
      if (final(i) && (worst < 0 || D.rank[o] < D.rank[worst])) worst = o;
    }
    return worst;
  }

  function testRow(n, cols) {
    const t = shownTests[n], R = D.results;
    const row = el("div", "row" + (t === S.selected ? " selected" : ""));
    row.style.gridTemplateColumns = cols.template;
    row.dataset.test = D.tests[t];
    row.append(el("span", "nodeid", D.tests[t]));
    let longest = 0;
    const finals = [], retried = new Set();
    for (let k = byTestStart[t]; k < byTestStart[t + 1]; k++) {
      const i = byTest[k];
      if (final(i)) finals.push(i); else retried.add(R.device[i]);
      longest = Math.max(longest, R.duration[i]);
    }
    if (cols.devices) {
      for (const d of cols.devices) {
        const i = finals.find((j) => R.device[j] === d);
        const cell = i === undefined ? el("span", "cell none", "-")
          : el("span", "cell " + cls(R.outcome[i]), outcomeName(R.outcome[i]).replace("_", " ") + (retried.has(d) ? " ↻" : ""));
        cell.dataset.device = D.devices[d];
        cell.title = i === undefined ? `not run on ${D.devices[d]}` : `${D.devices[d]}: ${outcomeName(R.outcome[i])}, ${seconds(R.duration[i])}` +
          (R.message[i] >= 0 ? "\n" + D.messages[R.message[i]] : "") + (retried.has(d) ? "\nretried after a crash or a device error" : "");
        row.append(cell);
      }
    } else {
      const i = finals[finals.length - 1];
      row.append(el("span", "cell " + cls(R.outcome[i]), outcomeName(R.outcome[i]).replace("_", " ") + (retried.size ? " ↻" : "")),
        el("span", null, D.devices[R.device[i]]), el("span", "mono", R.lane[i] >= 0 ? D.lanes[R.lane[i]][0] : "-"));
    }
    row.append(el("span", "num", seconds(longest)), historyCell(t));
    row.addEventListener("click", () => select(t, -1));
    return row;
  }

  function drawTests() {
    drawTestsHead();
    const cols = columns();
    const box = $("tests-rows");
    box.style.minWidth = $("tests-head").style.minWidth;
    if (!shownTests.length) { box.style.height = "auto"; box.replaceChildren(el("div", "empty", "No test matches the filters.")); return; }
    virtualList($("tests-scroll"), box, shownTests.length, (n) => testRow(n, cols));
  }

  function failureRow(n) {
    const i = shownFailures[n], R = D.results;
    const row = el("div", "row failure" + (R.test[i] === S.selected ? " selected" : ""));
    row.style.gridTemplateColumns = "90px minmax(240px, 2fr) 110px minmax(200px, 3fr)";
    row.dataset.test = D.tests[R.test[i]];
    row.dataset.device = D.devices[R.device[i]];
    const badge = el("span", "badge " + cls(R.outcome[i]), outcomeName(R.outcome[i]).replace("_", " "));
    const retried = final(i) ? "" : " (retried)";
    row.append(badge, el("span", "nodeid", D.tests[R.test[i]]), el("span", null, D.devices[R.device[i]] + retried),
      el("span", "msg", R.message[i] >= 0 ? D.messages[R.message[i]] : ""));
    row.addEventListener("click", () => select(R.test[i], i));
    return row;
  }

  function drawFailures() {
    const box = $("failures-rows");
    if (!shownFailures.length) { box.style.height = "auto"; box.replaceChildren(el("div", "empty", "Nothing failed that matches the filters.")); return; }
    virtualList($("failures-scroll"), box, shownFailures.length, failureRow);
  }

  // ------------------------------------------------------------------ the timeline

  const COLORS = {};
  function color(o) {
    const name = cls(o);
    if (!COLORS[name]) COLORS[name] = getComputedStyle(document.documentElement).getPropertyValue("--" + name).trim() || "#888";
    return COLORS[name];
  }
  let hatch = null;

  function xOf(us, width) { return LABEL_W + ((us - S.t0) / (S.t1 - S.t0)) * (width - LABEL_W - 8); }
  function usOf(x, width) { return S.t0 + ((x - LABEL_W) / (width - LABEL_W - 8)) * (S.t1 - S.t0); }

  function niceStep(span, pixels) {
    const raw = span / Math.max(1, pixels / 110);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function drawTimeline() {
    const scroller = $("tl-scroll"), canvas = $("tl-canvas");
    $("tl-spacer").style.height = AXIS_H + shownLanes.length * LANE_H + 8 + "px";
    const width = scroller.clientWidth, height = scroller.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
      canvas.style.width = width + "px"; canvas.style.height = height + "px";
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (!hatch) {
      const tile = document.createElement("canvas"); tile.width = 6; tile.height = 6;
      const c = tile.getContext("2d");
      c.fillStyle = "#ffffff"; c.fillRect(0, 0, 6, 6);
      c.strokeStyle = color(D.outcomes.indexOf("device_error")); c.lineWidth = 2;
      c.beginPath(); c.moveTo(0, 6); c.lineTo(6, 0); c.stroke();
      hatch = ctx.createPattern(tile, "repeat");
    }
    const R = D.results, scrollTop = scroller.scrollTop;
    const first = Math.max(0, Math.floor(scrollTop / LANE_H));
    const last = Math.min(shownLanes.length, Math.ceil((scrollTop + height - AXIS_H) / LANE_H) + 1);
    const labels = [];
    ctx.font = "11px system-ui, sans-serif";
    for (let row = first; row < last; row++) {
      const lane = shownLanes[row];
      const y = AXIS_H + row * LANE_H - scrollTop;
      ctx.fillStyle = row % 2 ? "#eceff3" : "#f3f5f8";     // idle time shows as the lane's own colour
      ctx.fillRect(LABEL_W, y + 1, width - LABEL_W - 8, LANE_H - 2);
      const [slot, d] = D.lanes[lane];
      const label = el("div", "lane-label", `${slot} · ${D.devices[d]}`);
      label.style.top = y + "px";
      label.dataset.lane = slot;
      label.dataset.device = D.devices[d];
      label.dataset.bars = "0";
      labels.push(label);
      let bars = 0;
      const from = byLaneStart[lane], to = byLaneStart[lane + 1];
      let lo = from, hi = to;                  // the first bar that ends after the window starts
      const startUs = S.t0 - (S.t1 - S.t0);    // bars are at most this long in practice; search from here
      while (lo < hi) { const mid = (lo + hi) >> 1; if (R.start[byLane[mid]] < startUs) lo = mid + 1; else hi = mid; }
      lo = Math.max(from, lo - 64);
      let lastPixel = -1, lastColor = null;
      for (let k = lo; k < to; k++) {
        const i = byLane[k];
        if (R.start[i] > S.t1) break;
        if (R.stop[i] < S.t0) continue;
        const x0 = xOf(R.start[i], width), x1 = xOf(R.stop[i], width);
        const x = Math.max(LABEL_W, x0), w = Math.max(1, Math.min(width - 8, x1) - x);
        const on = matches(i) && (!S.text || (haystack && haystack[R.test[i]].includes(S.text)));
        const fill = on ? color(R.outcome[i]) : "#d5d9df";
        const retried = !final(i) || outcomeName(R.outcome[i]) === "device_error";
        if (w < 1.5 && Math.floor(x) === lastPixel && fill === lastColor && !retried) continue;  // same pixel, same colour
        lastPixel = Math.floor(x); lastColor = fill;
        bars++;
        if (retried && on) {
          ctx.fillStyle = hatch; ctx.fillRect(x, y + 3, w, LANE_H - 6);
          ctx.strokeStyle = fill; ctx.lineWidth = 1; ctx.strokeRect(x + 0.5, y + 3.5, Math.max(0, w - 1), LANE_H - 7);
        } else {
          ctx.fillStyle = fill; ctx.fillRect(x, y + 3, w, LANE_H - 6);
        }
        const name = outcomeName(R.outcome[i]);
        if (on && (name === "crashed" || name === "timeout")) {   // a mark above the end of the bar
          const xe = Math.min(width - 10, x + w);
          ctx.fillStyle = "#000";
          ctx.beginPath(); ctx.moveTo(xe - 5, y); ctx.lineTo(xe + 1, y); ctx.lineTo(xe - 2, y + 6); ctx.fill();
        }
      }
      label.dataset.bars = String(bars);
      for (const [qd, reason, at] of D.quarantines) {
        if (qd !== d) continue;
        const x = xOf(at, width);
        if (x > width - 8) continue;
        const xs = Math.max(LABEL_W, x);
        ctx.fillStyle = "rgba(176, 0, 176, 0.12)"; ctx.fillRect(xs, y + 1, width - 8 - xs, LANE_H - 2);
        if (x >= LABEL_W) { ctx.fillStyle = "#b000b0"; ctx.fillRect(x - 1, y, 3, LANE_H); }
        ctx.fillStyle = "#6d006d"; ctx.fillText("quarantined: " + reason, xs + 6, y + LANE_H - 7, Math.max(40, width - xs - 20));
      }
    }
    // the axis, over everything
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, width, AXIS_H);
    ctx.fillStyle = "#5d6675"; ctx.strokeStyle = "#d9dde4"; ctx.lineWidth = 1;
    const step = niceStep(S.t1 - S.t0, width - LABEL_W);
    for (let t = Math.ceil(S.t0 / step) * step; t <= S.t1; t += step) {
      const x = Math.round(xOf(t, width)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, AXIS_H - 6); ctx.lineTo(x, AXIS_H); ctx.stroke();
      ctx.fillText(seconds(t), x + 3, AXIS_H - 9);
    }
    ctx.beginPath(); ctx.moveTo(LABEL_W, AXIS_H - 0.5); ctx.lineTo(width - 8, AXIS_H - 0.5); ctx.stroke();
    const labelBox = $("tl-labels");
    labelBox.style.top = "0px";
    labelBox.replaceChildren(...labels);
  }

  function drawLegend() {
    const names = ["passed", "failed", "error", "crashed", "timeout", "skipped", "xfailed", "xpassed"];
    const legend = $("tl-legend");
    legend.replaceChildren(...names.filter((n) => D.outcomes.includes(n)).map((n) => el("span", "o-" + n, n)),
      el("span", "mk-retry", "retried (crash, device error)"), el("span", "mk-quarantine", "quarantined"),
      el("span", "mk-idle", "idle"));
  }

  function barAt(clientX, clientY) {
    const canvas = $("tl-canvas"), box = canvas.getBoundingClientRect(), width = $("tl-scroll").clientWidth;
    const x = clientX - box.left, y = clientY - box.top;
    if (x < LABEL_W || y < AXIS_H) return -1;
    const row = Math.floor((y - AXIS_H + $("tl-scroll").scrollTop) / LANE_H);
    if (row < 0 || row >= shownLanes.length) return -1;
    const lane = shownLanes[row], R = D.results;
    const t = usOf(x, width), slack = (3 / (width - LABEL_W - 8)) * (S.t1 - S.t0);
    let best = -1, bestGap = Infinity;
    for (let k = byLaneStart[lane]; k < byLaneStart[lane + 1]; k++) {
      const i = byLane[k];
      if (R.start[i] > t + slack) break;
      const gap = t < R.start[i] ? R.start[i] - t : t > R.stop[i] ? t - R.stop[i] : 0;
      if (gap <= slack && gap <= bestGap) { best = i; bestGap = gap; }
    }
    return best;
  }

  function describe(i) {
    const R = D.results;
    const lines = [D.tests[R.test[i]],
      `${outcomeName(R.outcome[i]).replace("_", " ")} on ${D.devices[R.device[i]]} (worker ${R.lane[i] >= 0 ? D.lanes[R.lane[i]][0] : "-"})`,
      `took ${seconds(R.duration[i])}, from ${seconds(R.start[i])} to ${seconds(R.stop[i])} into the run`];
    if (!final(i)) lines.push("retried: a later attempt replaced this one");
    if (R.message[i] >= 0) lines.push(D.messages[R.message[i]]);
    return lines.join("\n");
  }

  function timelineEvents() {
    const canvas = $("tl-canvas"), tip = $("tip"), scroller = $("tl-scroll");
    let drag = null;
    canvas.addEventListener("mousemove", (e) => {
      if (drag) {
        const width = scroller.clientWidth, per = (S.t1 - S.t0) / (width - LABEL_W - 8);
        const dt = (drag.x - e.clientX) * per;
        S.t0 = drag.t0 + dt; S.t1 = drag.t1 + dt; drag.moved = true;
        drawTimeline();
        return;
      }
      const i = barAt(e.clientX, e.clientY);
      if (i < 0) { tip.hidden = true; return; }
      tip.textContent = describe(i);
      tip.hidden = false;
      tip.style.left = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
      tip.style.top = Math.min(e.clientY + 14, window.innerHeight - tip.offsetHeight - 8) + "px";
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, t0: S.t0, t1: S.t1, moved: false }; });
    window.addEventListener("mouseup", (e) => {
      if (drag && !drag.moved && e.target === canvas) {
        const i = barAt(e.clientX, e.clientY);
        if (i >= 0) select(D.results.test[i], i);
      }
      drag = null;
    });
    canvas.addEventListener("wheel", (e) => {
      if (!(e.ctrlKey || e.metaKey || e.shiftKey)) return;  // a plain wheel scrolls the lanes
      e.preventDefault();
      const width = scroller.clientWidth;
      if (e.shiftKey && !(e.ctrlKey || e.metaKey)) {
        const dt = (e.deltaY + e.deltaX) / (width - LABEL_W) * (S.t1 - S.t0);
        S.t0 += dt; S.t1 += dt;
      } else {
        zoom(e.deltaY < 0 ? 0.8 : 1.25, usOf(Math.max(LABEL_W, e.clientX - canvas.getBoundingClientRect().left), width));
      }
      drawTimeline();
    }, { passive: false });
    scroller.addEventListener("scroll", () => drawTimeline());
    $("tl-in").addEventListener("click", () => { zoom(0.5, (S.t0 + S.t1) / 2); drawTimeline(); });
    $("tl-out").addEventListener("click", () => { zoom(2, (S.t0 + S.t1) / 2); drawTimeline(); });
    $("tl-fit").addEventListener("click", () => { S.t0 = 0; S.t1 = Math.max(D.span, 1); drawTimeline(); });
  }

  function zoom(factor, around) {
    const span = Math.max(1000, (S.t1 - S.t0) * factor);   // never closer than 1 ms across the view
    const share = (around - S.t0) / (S.t1 - S.t0);
    S.t0 = around - share * span; S.t1 = S.t0 + span;
  }

  // ------------------------------------------------------------------ one test, in detail

  function select(t, focus) {
    S.selected = t; S.focus = focus;
    drawDetail();
    drawView();
  }

  function drawDetail() {
    const box = $("detail"), t = S.selected, R = D.results;
    if (t < 0) { box.hidden = true; return; }
    box.hidden = false;
    const close = el("button", "close", "×");
    close.title = "close";
    close.addEventListener("click", () => { S.selected = -1; drawDetail(); drawView(); });
    const parts = [close, el("h2", null, D.tests[t])];
    const hist = el("div", "hist-runs");
    for (let k = D.history.runs.length - 1; k >= 0; k--) {
      const o = D.history.outcomes[k][t];
      const mark = el("span", o >= 0 ? cls(o) : "absent", `run ${D.history.runs[k].id}: ${o >= 0 ? outcomeName(o).replace("_", " ") : "not run"}`);
      mark.title = when(D.history.runs[k].started);
      hist.append(mark);
    }
    hist.append(el("span", cls(worstOf(t)), `run ${D.run.id}: ${outcomeName(worstOf(t)).replace("_", " ")} (this run)`));
    parts.push(el("div", "facts", D.history.runs.length ? "history, oldest first:" : "no earlier run recorded"), hist);
    for (let k = byTestStart[t]; k < byTestStart[t + 1]; k++) {
      const i = byTest[k];
      const card = el("div", "attempt" + (i === S.focus ? " focus" : ""));
      card.dataset.device = D.devices[R.device[i]];
      card.append(el("span", "badge " + cls(R.outcome[i]), outcomeName(R.outcome[i]).replace("_", " ")),
        el("span", "facts", `${D.devices[R.device[i]]} · worker ${R.lane[i] >= 0 ? D.lanes[R.lane[i]][0] : "-"} · took ${seconds(R.duration[i])} · ` +
          `started ${seconds(R.start[i])} into the run` + (final(i) ? "" : " · retried: a later attempt replaced this one")));
      if (R.message[i] >= 0) card.append(el("div", "msg mono", D.messages[R.message[i]]));
      if (R.detail[i] >= 0) card.append(...detailParts(R.detail[i]));
      parts.push(card);
    }
    box.replaceChildren(...parts);
    box.scrollTop = 0;
    const focused = box.querySelector(".attempt.focus");
    if (focused) focused.scrollIntoView({ block: "nearest" });
  }

  function detailParts(d) {
    const traceback = el("details", "traceback");
    traceback.open = true;
    const pre = el("pre", null, "decoding…");
    traceback.append(el("summary", null, "traceback"), pre);
    const outputs = el("div", "captured-list");
    const fill = () => {
      const [longrepr, sections] = details[d];
      pre.textContent = longrepr || "(no failure text was recorded)";
      outputs.replaceChildren(...sections.map(([title, text]) => {
        const section = el("details", "captured");       // captured output: shown when asked for
        section.append(el("summary", null, title), el("pre", null, text));
        return section;
      }));
    };
    if (details) fill(); else loadDetails().then(fill);
    return [traceback, outputs];
  }

  // ------------------------------------------------------------------ views

  function drawView() {
    const start = performance.now();
    if (S.view === "tests") drawTests();
    else if (S.view === "timeline") drawTimeline();
    else drawFailures();
    const total = D.tests.length;
    $("shown").textContent = S.view === "failures" ? `${thousands(shownFailures.length)} failing results shown`
      : S.view === "timeline" ? `${thousands(shownLanes.length)} of ${thousands(D.lanes.length)} lanes`
      : `${thousands(shownTests.length)} of ${thousands(total)} tests shown`;
    window.testrackReport.lastDraw = performance.now() - start;
  }

  function tabs() {
    for (const button of document.querySelectorAll("#tabs button")) {
      button.addEventListener("click", () => showView(button.dataset.view));
    }
    let pending = false;
    const later = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; drawView(); }); } };
    $("tests-scroll").addEventListener("scroll", later);
    $("failures-scroll").addEventListener("scroll", later);
    window.addEventListener("resize", later);
  }

  function showView(view) {
    S.view = view;
    for (const button of document.querySelectorAll("#tabs button")) button.setAttribute("aria-selected", String(button.dataset.view === view));
    for (const name of ["tests", "timeline", "failures"]) $("view-" + name).hidden = name !== view;
    drawView();
  }

  window.testrackReport = {
    lastDraw: 0,
    /** Where a result's bar is on screen (for tests and benchmarks that point at one). */
    barBox(nodeid, device) {
      const R = D.results, t = D.tests.indexOf(nodeid), d = D.devices.indexOf(device);
      for (let k = byTestStart[t]; k < byTestStart[t + 1]; k++) {
        const i = byTest[k];
        if (R.device[i] !== d || !final(i)) continue;
        const row = shownLanes.indexOf(R.lane[i]);
        if (row < 0) return null;
        const box = $("tl-canvas").getBoundingClientRect(), width = $("tl-scroll").clientWidth;
        const x0 = Math.max(LABEL_W, xOf(R.start[i], width)), x1 = xOf(R.stop[i], width);
        return { x: box.left + x0, y: box.top + AXIS_H + row * LANE_H - $("tl-scroll").scrollTop + 3, width: Math.max(1, x1 - x0), height: LANE_H - 6 };
      }
      return null;
    },
  };

  async function main() {
    if (typeof DecompressionStream === "undefined") {
      document.body.replaceChildren(el("p", "empty", "This report needs a browser from 2023 or later (one with DecompressionStream)."));
      return;
    }
    D = await inflate("report-data");
    index();
    drawSummary();
    drawFilters();
    drawLegend();
    tabs();
    timelineEvents();
    if (D.summary.failing) $("tabs").querySelector('[data-view="failures"]').textContent = `Failures (${thousands(D.summary.failing)})`;
    refresh();
    requestAnimationFrame(() => {
      performance.mark("testrack-ready");
      document.documentElement.dataset.ready = "1";
    });
  }

  main().catch((err) => {
    document.body.prepend(el("pre", "empty", "The report could not be drawn: " + err));
    document.documentElement.dataset.ready = "error";
  });
})();
