/* memsnap's page script: draws the maps, legend, tables and the replay chart from the
   page's JSON data. No library and no request: everything it needs is in the page.
   Every text from the data reaches the page through textContent or esc(). */
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const F = {};
  D.fields.forEach(function (name, i) { F[name] = i; });
  const KINDS = D.kinds;
  const PATHS = D.paths;
  const snap = D.snapshot || D.to;
  const PAGE = (snap && snap.page_size) || 4096;
  const TABLE_LIMIT = 1000;
  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

  function human(n) {
    if (n === null || n === undefined) return "-";
    let v = Math.abs(n), u = 0;
    while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
    const sign = n < 0 ? "-" : "";
    return u === 0 ? sign + Math.round(v) + " B" : sign + v.toFixed(1) + " " + UNITS[u];
  }
  function approx(n) {
    let v = n, u = 0;
    while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
    return "≈ " + (v >= 10 || u === 0 ? Math.round(v) : v.toFixed(1)) + " " + UNITS[u];
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function pathOf(r) {
    return r[F.path] < 0 ? "" : PATHS[r[F.path]];
  }
  function baseName(p) {
    if (!p || p.charAt(0) === "[") return p;
    const i = p.lastIndexOf("/");
    return i >= 0 && i < p.length - 1 ? p.slice(i + 1) : p;
  }
  function hex(s) { return s.slice(2); }
  function kindOf(r) { return KINDS[r[F.kind]]; }
  function isWX(r) { const p = r[F.perms]; return p.indexOf("w") >= 0 && p.indexOf("x") >= 0; }
  // A region's drawn height grows with log2 of its pages: a 4 KiB guard page stays
  // visible beside a 1 GiB heap.
  function height(size) {
    const pages = Math.max(1, size / PAGE);
    return Math.round(4 + 3 * Math.log2(pages));
  }

  /* --- one map ------------------------------------------------------------------- */
  const maps = [];  // [{rows, marks, changes}] as drawn, for the tooltip and the table

  // Regions go in chunks the browser may skip laying out while they are off screen
  // (content-visibility): a 60,000-region map is mostly off screen.
  const CHUNK = 256;
  const GAP_HEIGHT = 20;

  function mapHTML(m, mapIndex) {
    const rows = m.regions, marks = m.marks;
    const out = [];
    let chunk = [], chunkHeight = 0;
    function flush() {
      if (!chunk.length) return;
      out.push('<div class="chunk" style="contain-intrinsic-size:auto ' + chunkHeight + 'px">' +
               chunk.join("") + "</div>");
      chunk = [];
      chunkHeight = 0;
    }
    let prevEnd = null;
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      const start = BigInt(r[F.start]), end = BigInt(r[F.end]);
      if (prevEnd !== null && start > prevEnd) {
        chunk.push('<div class="gap"><span>' + esc(approx(Number(start - prevEnd))) +
                   "</span></div>");
        chunkHeight += GAP_HEIGHT;
      }
      if (prevEnd === null || end > prevEnd) prevEnd = end;
      const size = r[F.size], h = height(size);
      const mark = marks ? marks[i] : "";
      let cls = "r k" + r[F.kind];
      if (isWX(r)) cls += " wx";
      if (mark) cls += " m-" + mark;
      // Resident memory is the bright part: a gradient stop, not an element of its own.
      let style = "height:" + h + "px";
      if (r[F.rss] !== null && size > 0) {
        style += ";--f:" + (100 * Math.min(1, r[F.rss] / size)).toFixed(1) + "%";
      }
      const label = h >= 16
        ? "<span>" + esc(kindOf(r) + " " + r[F.start] + " " + (baseName(pathOf(r)) || "")) + "</span>"
        : "";
      chunk.push('<div class="' + cls + '" data-i="' + i + '" data-start="' + esc(r[F.start]) +
                 (mark ? '" data-mark="' + esc(mark) : "") + '" tabindex="0" style="' + style +
                 '">' + label + "</div>");
      chunkHeight += h;
      if (chunk.length >= CHUNK) flush();
    }
    flush();
    return out.join("");
  }

  function drawMaps(list) {
    const box = document.getElementById("maps");
    maps.length = 0;
    const parts = [];
    list.forEach(function (m, k) {
      maps.push(m);
      parts.push('<div class="mapwrap">' + (m.title ? "<h3>" + esc(m.title) + "</h3>" : "") +
                 '<div class="map" data-m="' + k + '">' + mapHTML(m, k) + "</div></div>");
    });
    box.innerHTML = parts.join("");
    drawLegend(list);
  }

  function drawLegend(list) {
    const present = new Set();
    list.forEach(function (m) { m.regions.forEach(function (r) { present.add(r[F.kind]); }); });
    const ul = document.getElementById("legend");
    ul.textContent = "";
    Array.from(present).sort(function (a, b) { return a - b; }).forEach(function (k) {
      const li = document.createElement("li");
      li.className = "k" + k;
      li.dataset.kind = KINDS[k];
      const sw = document.createElement("span");
      sw.className = "sw";
      li.appendChild(sw);
      li.appendChild(document.createTextNode(KINDS[k]));
      ul.appendChild(li);
    });
  }

  /* --- hover and focus ------------------------------------------------------------ */
  const tip = document.getElementById("tip");

  function mapsLine(r) {
    const off = r[F.offset].toString(16).padStart(8, "0");
    let line = hex(r[F.start]) + "-" + hex(r[F.end]) + " " + r[F.perms] + " " + off + " " +
               r[F.dev] + " " + r[F.inode];
    const p = pathOf(r);
    if (p) line += " " + p + (r[F.deleted] ? " (deleted)" : "");
    return line;
  }
  function tipText(m, i) {
    const r = m.regions[i];
    const size = r[F.size];
    const lines = [
      mapsLine(r),
      kindOf(r) + " · start " + r[F.start] + " · size " + human(size) + " (" + size + " B, " +
        Math.round(size / PAGE) + " pages)",
    ];
    if (r[F.rss] === null) {
      lines.push("smaps: not recorded");
    } else {
      lines.push("Rss " + human(r[F.rss]) + " · Pss " + human(r[F.pss]) + " · Swap " +
                 human(r[F.swap]));
      lines.push("Shared_Clean " + human(r[F.shared_clean]) + " · Shared_Dirty " +
                 human(r[F.shared_dirty]) + " · Private_Clean " + human(r[F.private_clean]) +
                 " · Private_Dirty " + human(r[F.private_dirty]));
    }
    if (isWX(r)) lines.push("writable and executable");
    const mark = m.marks ? m.marks[i] : "";
    if (mark) {
      const what = m.changes && m.changes[i] && m.changes[i].length ? ": " + m.changes[i].join(", ") : "";
      lines.push(mark + what);
    }
    return lines.join("\n");
  }
  function showTip(el, text) {
    tip.textContent = text;
    tip.hidden = false;
    const box = el.getBoundingClientRect();
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = box.right + 12, y = box.top;
    if (x + w > window.innerWidth - 4) x = Math.max(4, box.left - w - 12);
    if (y + h > window.innerHeight - 4) y = Math.max(4, window.innerHeight - h - 4);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }
  function regionEvent(ev) {
    const el = ev.target.closest ? ev.target.closest(".r") : null;
    if (!el) return;
    const m = maps[+el.closest(".map").dataset.m];
    showTip(el, tipText(m, +el.dataset.i));
  }
  const mapsBox = document.getElementById("maps");
  mapsBox.addEventListener("mouseover", regionEvent);
  mapsBox.addEventListener("focusin", regionEvent);
  mapsBox.addEventListener("mouseleave", hideTip);
  mapsBox.addEventListener("focusout", hideTip);

  /* --- the table ------------------------------------------------------------------- */
  let tableRows = [];
  function drawTable(entries, withMarks, limit) {
    // entries: [[map, index], ...] in the order to list them
    const table = document.getElementById("regions");
    const head = ["kind", "start-end", "size", "pages", "perms", "rss", "pss", "swap", "path"];
    if (withMarks) head.unshift("");
    if (withMarks) head.push("changes");
    const out = ["<thead><tr>" + head.map(function (h) { return "<th>" + esc(h) + "</th>"; }).join("") +
                 "</tr></thead><tbody>"];
    const shown = entries.slice(0, limit);
    shown.forEach(function (e) {
      const m = e[0], r = m.regions[e[1]];
      const mark = m.marks ? m.marks[e[1]] : "";
      const cells = [];
      if (withMarks) cells.push({ "added": "+", "removed": "−", "changed": "~" }[mark] || "");
      const p = pathOf(r);
      cells.push(kindOf(r), hex(r[F.start]) + "-" + hex(r[F.end]), human(r[F.size]),
                 String(Math.round(r[F.size] / PAGE)), r[F.perms], human(r[F.rss]),
                 human(r[F.pss]), human(r[F.swap]), p + (p && r[F.deleted] ? " (deleted)" : ""));
      if (withMarks) cells.push(m.changes && m.changes[e[1]] ? m.changes[e[1]].join(",") : "");
      out.push('<tr class="k' + r[F.kind] + '">' + cells.map(function (c, j) {
        const cls = head[j] === "path" ? ' class="path"' : (/^(size|pages|rss|pss|swap)$/.test(head[j]) ? ' class="num"' : "");
        const sw = head[j] === "kind" ? '<span class="sw"></span>' : "";
        return "<td" + cls + ">" + sw + esc(c) + "</td>";
      }).join("") + "</tr>");
    });
    out.push("</tbody>");
    table.innerHTML = out.join("");
    const more = document.getElementById("more");
    if (entries.length > shown.length) {
      more.hidden = false;
      more.textContent = "show all " + entries.length + " rows (" + (entries.length - shown.length) + " more)";
      more.onclick = function () { drawTable(entries, withMarks, entries.length); };
    } else {
      more.hidden = true;
    }
    tableRows = entries;
  }

  function allEntries(topDown) {
    const entries = [];
    maps.forEach(function (m) {
      for (let i = 0; i < m.regions.length; i++) entries.push([m, i]);
    });
    if (topDown) entries.reverse();
    return entries;
  }
  function markedEntries() {
    const entries = [];
    maps.forEach(function (m) {
      for (let i = 0; i < m.regions.length; i++) if (m.marks && m.marks[i]) entries.push([m, i]);
    });
    return entries;
  }

  /* --- top-down ------------------------------------------------------------------- */
  const topdown = document.getElementById("topdown");
  function applyOrder() {
    mapsBox.classList.toggle("top-down", topdown.checked);
    if (D.page === "show") drawTable(allEntries(topdown.checked), false, TABLE_LIMIT);
  }
  topdown.checked = !!D.top_down;
  topdown.addEventListener("change", applyOrder);

  /* --- the replay ----------------------------------------------------------------- */
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(el);
    return el;
  }

  function replay() {
    const steps = D.steps;
    const versions = D.versions.map(function (v) {
      return { first: v[0], last: v[1], born: v[2], died: v[3], changes: v[4], row: v.slice(5),
               start: BigInt(v[5 + F.start]), end: BigInt(v[5 + F.end]) };
    });
    const slider = document.getElementById("step");
    const info = document.getElementById("stepinfo");

    function layoutAt(k) {
      const picked = versions.filter(function (v) {
        return (v.first <= k && (v.last === null || v.last >= k)) ||
               (k > 0 && v.last === k - 1 && v.died === "r");
      });
      picked.sort(function (a, b) {
        if (a.start !== b.start) return a.start < b.start ? -1 : 1;
        const ga = a.last === k - 1, gb = b.last === k - 1;  // a removed one first
        if (ga !== gb) return ga ? -1 : 1;
        return a.end < b.end ? -1 : a.end > b.end ? 1 : 0;
      });
      const m = { title: "", regions: [], marks: [], changes: [] };
      picked.forEach(function (v) {
        let mark = "";
        if (k > 0 && v.last === k - 1) mark = "removed";
        else if (k > 0 && v.first === k) mark = v.born === "c" ? "changed" : "added";
        m.regions.push(v.row);
        m.marks.push(mark);
        m.changes.push(mark === "changed" ? v.changes : []);
      });
      return m;
    }

    function select(k) {
      slider.value = String(k);
      const s = steps[k];
      drawMaps([layoutAt(k)]);
      drawTable(markedEntries(), true, TABLE_LIMIT);
      let text = "step " + (k + 1) + " of " + steps.length + ": snapshot " + s.id + " at " +
                 s.local_time + ", " + s.regions + " regions, " + human(s.total);
      if (s.counts) text += "; " + s.counts[0] + " added, " + s.counts[1] + " removed, " +
                            s.counts[2] + " changed";
      info.textContent = text;
      document.querySelectorAll("#chart .pt").forEach(function (p) {
        p.classList.toggle("sel", +p.dataset.step === k);
      });
    }

    drawChart(steps, select);
    slider.addEventListener("input", function () { select(+slider.value); });
    select(steps.length - 1);
  }

  function drawChart(steps, select) {
    const W = 900, H = 280, L = 70, R = 16, T = 26, B = 30;
    const box = document.getElementById("chart");
    const root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H,
                              role: "img", "aria-label": "memory over time" }, box);
    const times = steps.map(function (s) { return s.t; });
    const t0 = Math.min.apply(null, times), t1 = Math.max.apply(null, times);
    const byTime = t1 > t0;
    const x = function (i) {
      const f = steps.length === 1 ? 0.5 : byTime ? (steps[i].t - t0) / (t1 - t0) : i / (steps.length - 1);
      return L + f * (W - L - R);
    };
    const kinds = new Set();
    steps.forEach(function (s) { Object.keys(s.kinds).forEach(function (k) { kinds.add(+k); }); });
    const order = Array.from(kinds).sort(function (a, b) { return a - b; });
    let top = 0;
    steps.forEach(function (s) {
      let sum = 0;
      order.forEach(function (k) { sum += s.kinds[k] || 0; });
      top = Math.max(top, sum, s.total);
    });
    top = top || 1;
    const y = function (v) { return H - B - (v / top) * (H - B - T); };
    svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, root);
    svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, root);
    [0, 0.5, 1].forEach(function (f) {
      const label = svg("text", { x: L - 6, y: y(top * f) + 4, "text-anchor": "end" }, root);
      label.textContent = human(top * f);
    });
    const first = svg("text", { x: L, y: H - 10 }, root);
    first.textContent = steps[0].local_time;
    const last = svg("text", { x: W - R, y: H - 10, "text-anchor": "end" }, root);
    last.textContent = steps[steps.length - 1].local_time;
    // Stacked areas, one per kind, lowest kind at the bottom.
    const base = steps.map(function () { return 0; });
    order.forEach(function (k) {
      const upper = steps.map(function (s, i) { return base[i] + (s.kinds[k] || 0); });
      if (upper.every(function (v, i) { return v === base[i]; })) return;
      const pts = [];
      steps.forEach(function (s, i) { pts.push(x(i).toFixed(1) + "," + y(upper[i]).toFixed(1)); });
      for (let i = steps.length - 1; i >= 0; i--) pts.push(x(i).toFixed(1) + "," + y(base[i]).toFixed(1));
      const area = svg("polygon", { points: pts.join(" "), class: "area k" + k }, root);
      svg("title", {}, area).textContent = KINDS[k];
      upper.forEach(function (v, i) { base[i] = v; });
    });
    // Library markers.
    steps.forEach(function (s, i) {
      if (!s.loaded.length && !s.unloaded.length) return;
      const mark = svg("line", { x1: x(i), x2: x(i), y1: T - 14, y2: H - B, class: "libmark",
                                 "data-step": i }, root);
      svg("title", {}, mark).textContent =
        s.loaded.map(function (p) { return "+ " + p; }).concat(
          s.unloaded.map(function (p) { return "− " + p; })).join("\n");
      const nearRight = x(i) > W - R - 40;
      const label = svg("text", { x: nearRight ? x(i) - 3 : x(i) + 3, y: T - 6, class: "libtext",
                                  "text-anchor": nearRight ? "end" : "start" }, root);
      label.textContent = (s.loaded.length ? "+" + s.loaded.length : "") +
                          (s.unloaded.length ? "−" + s.unloaded.length : "");
    });
    // The total, and one point per step.
    svg("polyline", { class: "total", points: steps.map(function (s, i) {
      return x(i).toFixed(1) + "," + y(s.total).toFixed(1); }).join(" ") }, root);
    const measure = D.measure === "rss" ? "RSS" : "size";
    steps.forEach(function (s, i) {
      const pt = svg("circle", { cx: x(i).toFixed(1), cy: y(s.total).toFixed(1),
                                 r: steps.length > 300 ? 2 : 3.5, class: "pt", tabindex: 0,
                                 "data-step": i, "data-id": s.id }, root);
      const lines = ["snapshot " + s.id + " · " + s.local_time, measure + " " + human(s.total)];
      order.forEach(function (k) {
        if (s.kinds[k]) lines.push("  " + KINDS[k] + " " + human(s.kinds[k]));
      });
      s.loaded.forEach(function (p) { lines.push("+ " + p); });
      s.unloaded.forEach(function (p) { lines.push("− " + p); });
      const text = lines.join("\n");
      pt.addEventListener("mouseenter", function () { showTip(pt, text); });
      pt.addEventListener("focus", function () { showTip(pt, text); });
      pt.addEventListener("mouseleave", hideTip);
      pt.addEventListener("blur", hideTip);
      pt.addEventListener("click", function () { select(i); });
      pt.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(i); }
      });
    });
  }

  /* --- the page ------------------------------------------------------------------- */
  if (D.page === "replay") {
    replay();
  } else {
    drawMaps(D.maps);
    if (D.page === "show") drawTable(allEntries(!!D.top_down), false, TABLE_LIMIT);
    else drawTable(markedEntries(), true, TABLE_LIMIT);
  }
  mapsBox.classList.toggle("top-down", topdown.checked);
  document.body.dataset.ready = "1";
})();
