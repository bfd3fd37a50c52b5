// A plotly figure redrawn in place with Plotly.react; binary arrays arrive as typed arrays (plot_pane.py).

function loadPlotly(model) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__wbPlotly) {
    window.__wbPlotly = new Promise((resolve, reject) => {
      const onMsg = (msg, buffers) => {
        if (!msg || msg.type !== "plotly-js") return;
        model.off("msg:custom", onMsg);
        if (window.Plotly) return resolve(window.Plotly);
        const blob = new Blob([buffers[0]], { type: "text/javascript" });
        const script = document.createElement("script");
        script.src = URL.createObjectURL(blob);
        script.onload = () => resolve(window.Plotly);
        script.onerror = () => reject(new Error("plotly.js did not load"));
        document.head.append(script);
      };
      model.on("msg:custom", onMsg);
      model.send({ type: "need-plotly" });
    });
  }
  return window.__wbPlotly;
}

const CTORS = {
  Float64Array, Float32Array, Int32Array, Int16Array, Int8Array, Uint8Array, Uint16Array, Uint32Array,
};

function isSpec(v) {
  return v && typeof v === "object" && !Array.isArray(v) && typeof v.dtype === "string" && "buffer" in v;
}

function typedOf(spec) {
  const b = spec.buffer;
  const bytes = b instanceof DataView ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
    : b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  const copy = bytes.slice(); // aligned
  const Ctor = CTORS[spec.dtype];
  const flat = new Ctor(copy.buffer, 0, copy.byteLength / Ctor.BYTES_PER_ELEMENT);
  const shape = spec.shape || [flat.length];
  if (shape.length < 2) return flat;
  const rows = [];
  const n = shape[1];
  for (let i = 0; i < shape[0]; i++) rows.push(flat.subarray(i * n, (i + 1) * n));
  return rows;
}

function decode(v) {
  if (isSpec(v)) return typedOf(v);
  if (Array.isArray(v)) return v.map(decode);
  if (v && typeof v === "object" && !(v instanceof DataView)) {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = decode(x);
    return out;
  }
  return v;
}

// Tick labels: plotly's default "hide past div" measures every label's bounding box once per label drawn
// (quadratic in the number of ticks, each a forced layout of the whole notebook page): ~110 ms per redraw
// of a 60-layer axis in JupyterLab. Labels of these figures lie inside their margins, so "allow" (no
// measuring) draws the same picture. A figure that sets ticklabeloverflow keeps its own value.
function allowTickLabels(layout, data) {
  for (const [key, ax] of Object.entries(layout)) {
    if (/^[xy]axis\d*$/.test(key) && ax && typeof ax === "object" && ax.ticklabeloverflow === undefined) {
      ax.ticklabeloverflow = "allow";
    }
  }
  if (layout.xaxis === undefined) layout.xaxis = { ticklabeloverflow: "allow" };
  if (layout.yaxis === undefined) layout.yaxis = { ticklabeloverflow: "allow" };
  for (const tr of data) {
    for (const bar of [tr.colorbar, tr.marker && tr.marker.colorbar]) {
      if (bar && typeof bar === "object" && bar.ticklabeloverflow === undefined) bar.ticklabeloverflow = "allow";
    }
  }
}

// Clicks (plotly.js 4.1: src/components/dragelement/index.js, src/plots/cartesian/dragbox.js,
// src/components/fx/click.js and hover.js). Two things went wrong with quick clicks:
// - plotly counts any second mousedown within doubleClickDelay (500 ms), wherever it lands, as a double
//   click, and its default double click ("reset+autosize") autoranges axes that are at the figure's own
//   ranges: a node and then an edge clicked quickly moved the graph's fixed axes (to [-29, 412.5] at K2).
//   So plotly's double click is off here; a real double click (two clicks at one place) puts the axes
//   back to the figure's own instead (undoes a drag zoom, as plotly's "reset" does).
// - plotly picks the clicked point (plotly_click) by re-running its hover at the mousedown's position,
//   but its hover runs at most once per 50 ms: within 50 ms of the last hover (the mouse moving onto
//   the point, or the click just before) it is put off, and the click goes out with the point of that
//   last hover, or none: a second click at once sent the first one's point (an edge click came as the
//   node's). Fx.unhover clears that throttle (and the hover), so the click's own hover runs at once: done
//   in a capture listener that runs before plotly's mouseup handler, in the same task (no flicker).
const CONFIG = { displaylogo: false, responsive: true, doubleClick: false };
const SAME_PLACE_PX = 4; // a double click's second press lands this close to the first (as browsers count it)

function bindClicks(Plotly, div, onDoubleClick) {
  let down = null; // the press in progress: {t, x, y, double}
  let last = null; // the last click (press and release at one place)
  const near = (a, b) => Math.abs(a.x - b.x) <= SAME_PLACE_PX && Math.abs(a.y - b.y) <= SAME_PLACE_PX;
  const onDown = (ev) => {
    const delay = (div._context && div._context.doubleClickDelay) || 500;
    const at = { t: performance.now(), x: ev.clientX, y: ev.clientY };
    down = { ...at, double: !!last && at.t - last.t < delay && near(at, last) };
  };
  const onUp = (ev) => {
    if (!down) return;
    const press = down;
    down = null;
    Plotly.Fx.unhover(div);
    const clicked = near(press, { x: ev.clientX, y: ev.clientY });
    last = clicked && !press.double ? press : null;
    if (clicked && press.double) onDoubleClick();
  };
  div.addEventListener("mousedown", onDown, true);
  window.addEventListener("mouseup", onUp, true);
  return () => {
    div.removeEventListener("mousedown", onDown, true);
    window.removeEventListener("mouseup", onUp, true);
  };
}

function render({ model, el }) {
  const div = document.createElement("div");
  div.className = "wb-plot";
  el.append(div);
  el.classList.add("wb-plot-pane");
  el.dataset.pane = model.get("pane") || "";
  let Plotly = null;
  let bound = false;
  let queued = Promise.resolve();
  let unbind = () => {};

  // A double click: the figure's own axes again (a fresh copy of its layout: plotly keeps the zoom in
  // the layout object it was given), if a zoom moved them.
  const resetAxes = () => {
    const own = decode((model.get("figure") || {}).layout || {});
    const update = {};
    for (const [key, ax] of Object.entries(div._fullLayout || {})) {
      if (!/^[xy]axis\d*$/.test(key) || !ax || ax.fixedrange) continue;
      const want = own[key] && own[key].range;
      const same = want && ax.range && want[0] === ax.range[0] && want[1] === ax.range[1];
      if (same || (!want && ax.autorange)) continue; // as the figure has it (zooming turns autorange off)
      if (want) update[`${key}.range`] = want.slice();
      else update[`${key}.autorange`] = (own[key] && own[key].autorange) || true;
    }
    if (!Object.keys(update).length) return;
    queued = queued.then(() => Plotly.relayout(div, update)).catch((err) => console.warn("wb plot pane:", err));
  };

  const draw = () => {
    const fig = model.get("figure") || {};
    if (!fig.data) return;
    const rev = fig.rev || 0;
    const t0 = performance.now();
    const layout = { ...decode(fig.layout || {}), height: model.get("height") };
    const data = decode(fig.data);
    allowTickLabels(layout, data);
    const t1 = performance.now();
    let t2 = t1;
    queued = queued
      .then(() => {
        t2 = performance.now();
        return Plotly.react(div, data, layout, CONFIG);
      })
      .then(() => {
        // where the browser's time went (benchmarks/bench_browser_latency.py reads these)
        el.dataset.receivedAt = t0.toFixed(1);
        el.dataset.decodeMs = (t1 - t0).toFixed(1);
        el.dataset.drawMs = (performance.now() - t2).toFixed(1);
        if (!bound) {
          bound = true;
          div.on("plotly_click", (ev) => {
            const p = ev && ev.points && ev.points[0];
            if (p) model.send({ type: "click", trace: p.curveNumber, point: p.pointNumber });
            // heatmaps give pointNumber = [row, col]; scatter a number
          });
          unbind = bindClicks(Plotly, div, resetAxes);
        }
        if (!el.dataset.rev) model.send({ type: "rendered" });
        el.dataset.rev = String(rev);
        el.dispatchEvent(new CustomEvent("wb-rendered", { bubbles: true, detail: { rev } }));
      })
      .catch((err) => console.warn("wb plot pane:", err));
  };

  loadPlotly(model).then((P) => {
    Plotly = P;
    draw();
  });
  const onChange = () => Plotly && draw();
  // Static image requests: composed from the drawn layers, or plotly.js's toImage (plot_image.js); the
  // bytes go back to the kernel (plot_pane.py).
  const onMsg = (msg) => {
    if (!msg || msg.type !== "image") return;
    const reply = (buffers, error, info) => model.send({ type: "image", id: msg.id, error, ...info }, undefined, buffers);
    queued = queued
      .then(() => plotImage(Plotly, div, msg))
      .then(({ bytes, ...info }) => {
        el.dataset.image = info.method; // how the last image was made (tests, benchmarks)
        reply([bytes.buffer], "", info);
      })
      .catch((err) => reply([], String(err), {}));
  };
  model.on("msg:custom", onMsg);
  model.on("change:figure", onChange);
  model.on("change:height", onChange);
  return () => {
    model.off("change:figure", onChange);
    model.off("change:height", onChange);
    model.off("msg:custom", onMsg);
    unbind();
    if (Plotly) Plotly.purge(div);
  };
}

export default { render };
