// Transcript pane of the K2 routing workbench (anywidget ESM).
// Per-token arrays arrive as binary buffers (DataView); segments are laid out as blocks whose
// tokens are created only when the block scrolls near the viewport, so 50k-token transcripts stay fast.

function bytesOf(v) {
  if (!v) return new Uint8Array(0);
  if (v instanceof DataView) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return new Uint8Array(0);
}

function typed(v, Ctor) {
  const copy = bytesOf(v).slice(); // aligned copy
  return new Ctor(copy.buffer, 0, copy.byteLength / Ctor.BYTES_PER_ELEMENT);
}

function readState(model) {
  const text = bytesOf(model.get("token_text"));
  const offsets = typed(model.get("token_offsets"), Int32Array);
  return {
    text,
    offsets,
    nTokens: Math.max(0, offsets.length - 1),
    ids: typed(model.get("token_ids"), Int32Array),
    segment: typed(model.get("token_segment"), Int8Array),
    step: typed(model.get("token_step"), Int32Array),
    spanStart: typed(model.get("span_start"), Int32Array),
    spanStop: typed(model.get("span_stop"), Int32Array),
    spanKind: typed(model.get("span_kind"), Int8Array),
    spanStep: typed(model.get("span_step"), Int32Array),
    spanLabels: model.get("span_labels") || [],
    steps: typed(model.get("steps"), Int32Array),
    kinds: model.get("segment_kinds") || [],
  };
}

// Blocks: the spans in order, plus runs of tokens no span covers (grouped by segment code).
function layoutBlocks(s) {
  const blocks = [];
  let cursor = 0;
  const gap = (a, b) => {
    let i = a;
    while (i < b) {
      let j = i + 1;
      while (j < b && s.segment[j] === s.segment[i]) j++;
      blocks.push({ start: i, stop: j, kind: s.segment[i], step: s.step[i], span: -1, label: "" });
      i = j;
    }
  };
  for (let i = 0; i < s.spanStart.length; i++) {
    const a = Math.max(s.spanStart[i], cursor);
    const b = s.spanStop[i];
    if (a > cursor) gap(cursor, a);
    if (b > a) {
      blocks.push({ start: a, stop: b, kind: s.spanKind[i], step: s.spanStep[i], span: i, label: s.spanLabels[i] || "" });
      cursor = b;
    }
  }
  if (cursor < s.nTokens) gap(cursor, s.nTokens);
  return blocks;
}

// Segments are grouped CHUNK to a div that the browser skips (style, layout, paint) while it is off
// screen (content-visibility in transcript.css). Per segment, the browser's visibility observer over
// ~1,200 segments cost 20-40 ms of every step's redraw; per chunk it watches ~150.
const CHUNK = 8;

function render({ model, el }) {
  const decoder = new TextDecoder("utf-8");
  let s = readState(model);
  let blocks = [];
  let blockOfToken = new Int32Array(0);
  let highlighted = [];
  let hlMask = new Uint8Array(0); // tokens behind the clicked node / edge
  let hitMask = new Uint8Array(0); // tokens of search hits
  let hitStarts = new Int32Array(0);
  let hitStops = new Int32Array(0);
  let currentHit = -1;

  el.classList.add("wb-transcript");
  const bar = document.createElement("div");
  bar.className = "wb-toolbar";
  const allBtn = document.createElement("button");
  allBtn.textContent = "All";
  allBtn.className = "wb-all";
  const prev = document.createElement("button");
  prev.textContent = "‹";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.className = "wb-step-slider";
  const next = document.createElement("button");
  next.textContent = "›";
  const stepLabel = document.createElement("span");
  stepLabel.className = "wb-step-label";
  bar.append(allBtn, prev, slider, next, stepLabel);
  const search = document.createElement("div");
  search.className = "wb-searchbar";
  const query = document.createElement("input");
  query.type = "search";
  query.className = "wb-search";
  query.placeholder = "search the text (Enter)";
  const regexLabel = document.createElement("label");
  const regex = document.createElement("input");
  regex.type = "checkbox";
  regex.className = "wb-search-regex";
  regexLabel.append(regex, " regex");
  const findBtn = document.createElement("button");
  findBtn.textContent = "Find";
  findBtn.className = "wb-search-go";
  const prevHit = document.createElement("button");
  prevHit.textContent = "▲";
  prevHit.title = "previous hit";
  const nextHit = document.createElement("button");
  nextHit.textContent = "▼";
  nextHit.title = "next hit";
  const graphHits = document.createElement("button");
  graphHits.textContent = "Graph hits";
  graphHits.className = "wb-search-select";
  graphHits.title = "Make the hits' tokens the graph's selection";
  const searchInfo = document.createElement("span");
  searchInfo.className = "wb-search-info";
  search.append(query, regexLabel, findBtn, prevHit, nextHit, graphHits, searchInfo);
  const status = document.createElement("div");
  status.className = "wb-status";
  const hlStatus = document.createElement("div");
  hlStatus.className = "wb-hl-status";
  const legend = document.createElement("div");
  legend.className = "wb-legend";
  const body = document.createElement("div");
  body.className = "wb-body";
  el.append(bar, search, legend, status, hlStatus, body);

  const tokenString = (p) => decoder.decode(s.text.subarray(s.offsets[p], s.offsets[p + 1]));
  const kindName = (code) => s.kinds[code] ?? `kind${code}`;

  function fillBlock(bi) {
    const b = blocks[bi];
    if (b.filled) return;
    b.filled = true;
    const frag = document.createDocumentFragment();
    for (let p = b.start; p < b.stop; p++) {
      const t = document.createElement("span");
      const str = tokenString(p);
      t.className = /^<[^<>]*>$/.test(str) ? "wb-tok wb-special" : "wb-tok";
      if (hlMask[p]) t.classList.add("wb-tok-hl");
      if (hitMask[p]) t.classList.add("wb-tok-hit");
      t.textContent = str === "" ? "∅" : str;
      t.dataset.pos = String(p);
      const stepText = s.step[p] >= 0 ? ` · step ${s.step[p]}` : "";
      t.title = `${JSON.stringify(str)} · id ${s.ids[p]} · pos ${p} · ${kindName(s.segment[p])}${stepText}`;
      frag.append(t);
    }
    b.bodyEl.append(frag);
  }

  const observer = new IntersectionObserver(
    (entries) => {
      for (const e of entries) if (e.isIntersecting) fillBlock(Number(e.target.dataset.block));
    },
    { root: body, rootMargin: "600px" },
  );

  function build() {
    observer.disconnect();
    body.replaceChildren();
    blocks = layoutBlocks(s);
    blockOfToken = new Int32Array(s.nTokens);
    let chunk = null;
    blocks.forEach((b, bi) => {
      if (bi % CHUNK === 0) {
        chunk = document.createElement("div");
        chunk.className = "wb-chunk";
        chunk.style.setProperty("--wb-n", String(Math.min(CHUNK, blocks.length - bi)));
        body.append(chunk);
      }
      blockOfToken.fill(bi, b.start, b.stop);
      const div = document.createElement("div");
      div.className = `wb-seg wb-kind-${kindName(b.kind)}`;
      div.dataset.block = String(bi);
      const head = document.createElement("div");
      head.className = "wb-seg-head";
      const parts = [kindName(b.kind)];
      if (b.step >= 0) parts.push(`step ${b.step}`);
      if (b.label) parts.push(b.label);
      parts.push(`${b.stop - b.start} tok`);
      head.textContent = parts.join(" · ");
      if (b.span >= 0) {
        head.dataset.span = String(b.span);
        head.title = "Click: reasoning graph of this segment";
      }
      const seg = document.createElement("div");
      seg.className = "wb-seg-body";
      div.append(head, seg);
      b.el = div;
      b.bodyEl = seg;
      chunk.append(div);
      observer.observe(div);
    });
    legend.replaceChildren(
      ...[...new Set(blocks.map((b) => b.kind))].map((k) => {
        const chip = document.createElement("span");
        chip.className = `wb-chip wb-kind-${kindName(k)}`;
        chip.textContent = kindName(k);
        return chip;
      }),
    );
    slider.min = "0";
    slider.max = String(Math.max(0, s.steps.length - 1));
    slider.disabled = s.steps.length === 0;
    prev.disabled = next.disabled = s.steps.length === 0;
    body.style.height = `${model.get("height")}px`;
  }

  // From client rects, not offsetTop: a chunk is a layout-containment root (content-visibility in
  // transcript.css), so it, not the body, is its segments' and tokens' offsetParent. The target is put
  // 8 px below the top, then kept there for 6 frames, longer while it still moves (at most 12):
  // segments just above it get their tokens (the observer fills what comes near) and chunks coming on
  // screen take their real height, which would push it down, out of view after a long jump. A user's
  // wheel, key or pointer in the text ends that.
  let settling = 0;
  let userMoved = false;
  for (const type of ["wheel", "pointerdown", "keydown", "touchstart"]) {
    body.addEventListener(type, () => (userMoved = true), { passive: true });
  }
  function scrollTo(target) {
    const place = () => {
      const top = target.getBoundingClientRect().top - body.getBoundingClientRect().top + body.scrollTop - 8;
      body.scrollTop = Math.max(0, top);
    };
    place();
    cancelAnimationFrame(settling);
    userMoved = false;
    let frames = 0;
    let still = 0; // frames in a row that needed no correction
    const again = () => {
      if (userMoved || !target.isConnected) return;
      const was = body.scrollTop;
      place();
      still = body.scrollTop === was ? still + 1 : 0;
      frames += 1;
      if ((frames < 6 || still < 2) && frames < 12) settling = requestAnimationFrame(again);
    };
    settling = requestAnimationFrame(again);
  }

  // The change leaves for the kernel first: model.set fires change:selection, whose redraw
  // (showSelection: classes, a layout read, maybe a scroll) waits for a microtask, so save_changes
  // sends before it; both still happen in this task, before the next frame.
  function setSelection(kind, index) {
    model.set("selection", { kind, index });
    model.save_changes();
  }

  function showSelection() {
    for (const h of highlighted) h.classList.remove("wb-sel", "wb-tok-sel");
    highlighted = [];
    const sel = model.get("selection") || { kind: "all", index: -1 };
    let n = 0;
    let first = null;
    let stepOfSel = -1;
    if (sel.kind === "step") {
      stepOfSel = sel.index;
      for (const b of blocks) {
        if (b.step === sel.index) {
          b.el.classList.add("wb-sel");
          highlighted.push(b.el);
          n += b.stop - b.start;
          first = first || b.el;
        }
      }
      status.textContent = `step ${sel.index}: ${n} tokens`;
    } else if (sel.kind === "segment") {
      const b = blocks.find((x) => x.span === sel.index);
      if (b) {
        b.el.classList.add("wb-sel");
        highlighted.push(b.el);
        first = b.el;
        stepOfSel = b.step;
        status.textContent = `segment ${kindName(b.kind)}${b.label ? " " + b.label : ""}: ${b.stop - b.start} tokens`;
      }
    } else if (sel.kind === "token" && sel.index >= 0 && sel.index < s.nTokens) {
      const bi = blockOfToken[sel.index];
      fillBlock(bi);
      const t = blocks[bi].bodyEl.children[sel.index - blocks[bi].start];
      if (t) {
        t.classList.add("wb-tok-sel");
        highlighted.push(t);
        first = t;
      }
      stepOfSel = s.step[sel.index];
      status.textContent = `token ${sel.index}: ${JSON.stringify(tokenString(sel.index))}`;
    } else if (sel.kind === "search") {
      let n = 0;
      for (let i = 0; i < hitStarts.length; i++) n += hitStops[i] - hitStarts[i];
      status.textContent = `search hits: ${hitStarts.length} hits, ${n} tokens`;
    } else {
      status.textContent = `whole sequence: ${s.nTokens} tokens`;
    }
    const si = stepOfSel >= 0 ? s.steps.indexOf(stepOfSel) : -1;
    if (si >= 0) slider.value = String(si);
    stepLabel.textContent = s.steps.length
      ? `step ${si >= 0 ? s.steps[si] : "–"} (${si + 1}/${s.steps.length})`
      : "no tool-loop steps";
    allBtn.classList.toggle("wb-active", sel.kind === "all");
    if (first && !isVisible(first)) scrollTo(first);
    signal("selection");
  }

  // Tell tests and benchmarks that the DOM shows the latest state (what changed, and a counter).
  let signals = 0;
  function signal(what) {
    signals += 1;
    el.dataset.signals = String(signals);
    el.dispatchEvent(new CustomEvent("wb-rendered", { bubbles: true, detail: { what } }));
  }

  function tokenEl(p) {
    const bi = blockOfToken[p];
    fillBlock(bi);
    return blocks[bi].bodyEl.children[p - blocks[bi].start];
  }

  // Positions arrive as sorted int32; classes are set on filled tokens now and on the rest when filled.
  function markAll(cls, mask, positions) {
    for (const t of body.querySelectorAll(`.${cls}`)) t.classList.remove(cls);
    mask.fill(0);
    for (const p of positions) {
      if (p < 0 || p >= s.nTokens) continue;
      mask[p] = 1;
      const b = blocks[blockOfToken[p]];
      if (b.filled) b.bodyEl.children[p - b.start].classList.add(cls);
    }
  }

  function showHighlight() {
    const pos = typed(model.get("highlight"), Int32Array);
    markAll("wb-tok-hl", hlMask, pos);
    el.dataset.highlighted = String(pos.length);
    hlStatus.textContent = pos.length || model.get("highlight_label") ? model.get("highlight_label") : "";
    if (pos.length) {
      const t = tokenEl(pos[0]);
      if (t && !isVisible(t)) scrollTo(t);
    }
    signal("highlight");
  }

  function showHits() {
    hitStarts = typed(model.get("hit_start"), Int32Array);
    hitStops = typed(model.get("hit_stop"), Int32Array);
    const pos = [];
    for (let i = 0; i < hitStarts.length; i++) for (let p = hitStarts[i]; p < hitStops[i]; p++) pos.push(p);
    markAll("wb-tok-hit", hitMask, pos);
    el.dataset.hits = String(hitStarts.length);
    searchInfo.textContent = model.get("search_status") || "";
    currentHit = -1;
    if (hitStarts.length) jumpHit(1);
    signal("hits");
  }

  function jumpHit(d) {
    if (!hitStarts.length) return;
    currentHit = (currentHit + d + hitStarts.length) % hitStarts.length;
    for (const t of body.querySelectorAll(".wb-tok-cur")) t.classList.remove("wb-tok-cur");
    let first = null;
    for (let p = hitStarts[currentHit]; p < hitStops[currentHit]; p++) {
      const t = tokenEl(p);
      if (t) {
        t.classList.add("wb-tok-cur");
        first = first || t;
      }
    }
    if (first && !isVisible(first)) scrollTo(first);
    searchInfo.textContent = `${model.get("search_status") || ""} · hit ${currentHit + 1}/${hitStarts.length}`;
  }

  let queries = (model.get("query") || {}).n || 0;
  function submitSearch() {
    queries += 1;
    model.set("query", { text: query.value, regex: regex.checked, n: queries });
    model.save_changes();
  }
  query.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") submitSearch();
  });
  findBtn.addEventListener("click", submitSearch);
  prevHit.addEventListener("click", () => jumpHit(-1));
  nextHit.addEventListener("click", () => jumpHit(1));
  graphHits.addEventListener("click", () => setSelection("search", -1));

  function isVisible(x) {
    const a = x.getBoundingClientRect();
    const b = body.getBoundingClientRect();
    return a.top >= b.top && a.bottom <= b.bottom;
  }

  body.addEventListener("click", (ev) => {
    const tok = ev.target.closest(".wb-tok");
    if (tok) return setSelection("token", Number(tok.dataset.pos));
    const head = ev.target.closest(".wb-seg-head");
    if (head && head.dataset.span !== undefined) setSelection("segment", Number(head.dataset.span));
  });
  slider.addEventListener("input", () => {
    stepLabel.textContent = `step ${s.steps[Number(slider.value)]} (${Number(slider.value) + 1}/${s.steps.length})`;
  });
  slider.addEventListener("change", () => setSelection("step", s.steps[Number(slider.value)]));
  const move = (d) => {
    if (!s.steps.length) return;
    const sel = model.get("selection");
    let i = sel.kind === "step" ? s.steps.indexOf(sel.index) : Number(slider.value) - d;
    i = Math.min(s.steps.length - 1, Math.max(0, i + d));
    setSelection("step", s.steps[i]);
  };
  prev.addEventListener("click", () => move(-1));
  next.addEventListener("click", () => move(1));
  allBtn.addEventListener("click", () => setSelection("all", -1));
  // The pane's buttons leave the keyboard focus where it was (as JupyterLab's toolbar buttons do; Tab
  // still reaches them). A mouse-focused button would take the focus from the notebook cell, and the
  // next click in the text gives it back: each change of the cell's focus makes JupyterLab's CSS restyle
  // the cell's whole subtree, tens of ms before the click's message could leave.
  const keepFocus = (ev) => {
    if (ev.button === 0 && ev.target.closest("button")) ev.preventDefault();
  };
  bar.addEventListener("mousedown", keepFocus);
  search.addEventListener("mousedown", keepFocus);

  // Backbone fires one change event per trait of a message: run each redraw once per message.
  const coalesce = (fn) => {
    let pending = false;
    return () => {
      if (pending) return;
      pending = true;
      queueMicrotask(() => {
        pending = false;
        fn();
      });
    };
  };
  const rebuild = coalesce(() => {
    s = readState(model);
    hlMask = new Uint8Array(s.nTokens);
    hitMask = new Uint8Array(s.nTokens);
    build();
    showSelection();
    showHighlight();
    showHits();
  });
  const onSelection = coalesce(showSelection);
  const onHighlight = coalesce(showHighlight);
  const onHits = coalesce(showHits);
  const dataTraits = ["token_text", "token_offsets", "span_start", "span_labels", "segment_kinds", "height"];
  for (const name of dataTraits) model.on(`change:${name}`, rebuild);
  model.on("change:selection", onSelection);
  model.on("change:highlight", onHighlight);
  model.on("change:highlight_label", onHighlight);
  model.on("change:hit_start", onHits);
  model.on("change:search_status", onHits);
  rebuild();
  return () => {
    observer.disconnect();
    cancelAnimationFrame(settling);
    for (const name of dataTraits) model.off(`change:${name}`, rebuild);
    model.off("change:selection", onSelection);
    model.off("change:highlight", onHighlight);
    model.off("change:highlight_label", onHighlight);
    model.off("change:hit_start", onHits);
    model.off("change:search_status", onHits);
  };
}

export default { render };
