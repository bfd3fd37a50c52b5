// Static images (PNG, SVG) of a plotly div as it is drawn on screen, composed from its live layers.
//
// Why: Plotly.toImage plots the whole figure again in an off-screen div (WebGL traces included: new
// regl contexts, shaders, buffers) and then does what this file does to that copy. At K2's shape (60
// layers × 384 experts, ~16k scattergl nodes) the re-plot is most of a second; the picture on screen is
// the same one. plotly.js draws a figure as, bottom to top: the "paper" <svg class="main-svg"> (background,
// axes, grid, every SVG trace, heatmap images), the WebGL canvases of its gl traces (.gl-canvas-context,
// .gl-canvas-focus; plotly creates them with preserveDrawingBuffer, so they can be read at any time), and
// the "toppaper" <svg> (title, legend, colorbar, annotations, upper shapes). plotly.js's own exporter
// (src/snapshot/tosvg.js, run by toImage on its copy) merges exactly these: a background rect, the canvases
// as <image>s in the paper's .glimages group, the toppaper's groups appended, the drag layer removed. Here
// the same is done to clones of the live layers, so the live plot is never touched:
// - SVG: one document as plotly writes it (the WebGL layer is a raster <image>, as in plotly's SVG).
// - PNG: the two SVG layers rasterised and the canvases drawn between them onto one 2-D canvas at
//   `scale` (SVG is vector, the canvases hold plotGlPixelRatio = 2 pixels per CSS pixel).
// The image has the size shown on screen; another size needs a new layout, and liveImage returns null
// (the caller then uses Plotly.toImage). It works for any figure in the div: it reads the layers,
// not the traces. This file is prepended to plot_pane.js (plot_pane.py), and loaded as a plain script by
// tests/test_plot_image_browser.py and benchmarks/bench_image_export.py.

const WB_SVG_NS = "http://www.w3.org/2000/svg";
const WB_XLINK_NS = "http://www.w3.org/1999/xlink";
const WB_XMLNS_NS = "http://www.w3.org/2000/xmlns/";

// A clone of one of the div's <svg> layers, standalone: namespaces, explicit size, no page background.
function wbCloneLayer(svg, width, height) {
  const c = svg.cloneNode(true);
  c.setAttributeNS(WB_XMLNS_NS, "xmlns", WB_SVG_NS);
  c.setAttributeNS(WB_XMLNS_NS, "xmlns:xlink", WB_XLINK_NS);
  c.setAttribute("width", String(width));
  c.setAttribute("height", String(height));
  c.setAttribute("viewBox", `0 0 ${width} ${height}`);
  c.style.background = "";
  return wbClean(c);
}

// As plotly's toSVG: no drag layer (transparent hit areas), no text that is hidden on screen (copies kept
// for MathJax), which other renderers might show. And as its static copy draws them: line widths that
// scale with the picture (a live plot keeps lines thin while zooming: vector-effect non-scaling-stroke,
// which would draw them half as wide in a scale-2 PNG or a zoomed SVG).
function wbClean(svg) {
  for (const drag of svg.querySelectorAll(".draglayer")) drag.remove();
  for (const el of svg.querySelectorAll("[style*=vector-effect]")) {
    if (el.style.vectorEffect === "non-scaling-stroke") el.style.vectorEffect = "none";
  }
  for (const t of svg.querySelectorAll("text")) {
    if (t.style.visibility === "hidden" || t.style.display === "none") t.remove();
    else t.removeAttribute("data-unformatted");
  }
  return svg;
}

// Serialised SVG text. Under a page with <base href>, plotly writes clip paths and gradients as
// url('PAGE#id'); in a standalone file they must be url(#id).
function wbSerialize(node) {
  const s = new XMLSerializer().serializeToString(node);
  return s.replace(/url\((?:'|"|&quot;)[^)#]*#([^)'"&]+)(?:'|"|&quot;)\)/g, "url(#$1)");
}

// The WebGL canvases plotly shows (not its picking canvas), in drawing order.
function wbGlCanvases(gd) {
  return Array.from(gd.querySelectorAll(".gl-container canvas")).filter(
    (c) => c.classList.contains("gl-canvas-context") || c.classList.contains("gl-canvas-focus"),
  );
}

function wbPaperBackground(svg, fullLayout) {
  const rect = document.createElementNS(WB_SVG_NS, "rect");
  rect.setAttribute("x", "0");
  rect.setAttribute("y", "0");
  rect.setAttribute("width", String(fullLayout.width));
  rect.setAttribute("height", String(fullLayout.height));
  rect.setAttribute("style", `fill: ${fullLayout.paper_bgcolor || "#fff"}; fill-opacity: 1;`);
  svg.insertBefore(rect, svg.firstChild);
}

function wbLoadSvg(text) {
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml;charset=utf-8" }));
  const img = new Image();
  img.src = url;
  return img.decode().then(
    () => (URL.revokeObjectURL(url), img),
    (err) => {
      URL.revokeObjectURL(url);
      throw new Error(`the plot's SVG layer did not load as an image (${err})`);
    },
  );
}

// The live div's layers, or null when plotly has not drawn it (or draws something this file does not know).
function wbLayers(gd) {
  const fl = gd && gd._fullLayout;
  if (!fl || !fl._paper || !fl._toppaper || !(fl.width > 0) || !(fl.height > 0)) return null;
  return { fl, paper: fl._paper.node(), top: fl._toppaper.node(), canvases: wbGlCanvases(gd) };
}

// One SVG document of the div as shown: the paper, the WebGL canvases as PNG <image>s, the toppaper's groups;
// `scale` × the shown size (as plotly's toSVG: width and height scaled, the viewBox the plot's pixels).
function wbLiveSvg(gd, scale) {
  const L = wbLayers(gd);
  if (!L) return null;
  const { fl } = L;
  const svg = wbCloneLayer(L.paper, fl.width, fl.height);
  wbPaperBackground(svg, fl);
  const glimages = svg.querySelector(".glimages") || svg.appendChild(document.createElementNS(WB_SVG_NS, "g"));
  for (const c of L.canvases) {
    const img = document.createElementNS(WB_SVG_NS, "image");
    img.setAttributeNS(WB_XLINK_NS, "xlink:href", c.toDataURL("image/png"));
    img.setAttribute("preserveAspectRatio", "none");
    img.setAttribute("x", "0");
    img.setAttribute("y", "0");
    img.setAttribute("width", c.style.width || String(fl.width));
    img.setAttribute("height", c.style.height || String(fl.height));
    glimages.append(img);
  }
  for (const g of Array.from(L.top.childNodes)) {
    if (g.childNodes.length) svg.append(g.cloneNode(true)); // empty groups (hover, zoom) carry nothing
  }
  wbClean(svg); // the toppaper's groups too
  svg.setAttribute("width", String(scale * fl.width));
  svg.setAttribute("height", String(scale * fl.height));
  return wbSerialize(svg);
}

// The toppaper alone, with the paper's <defs> too: its colour bars fill with gradients plotly defines there.
function wbTopLayer(L, fl) {
  const top = wbCloneLayer(L.top, fl.width, fl.height);
  for (const defs of L.paper.querySelectorAll(":scope > defs")) top.insertBefore(defs.cloneNode(true), top.firstChild);
  return top;
}

// A PNG (Uint8Array) of the div as shown, `scale` image pixels per CSS pixel.
async function wbLivePng(gd, scale) {
  const L = wbLayers(gd);
  if (!L) return null;
  const { fl } = L;
  const paper = wbCloneLayer(L.paper, fl.width, fl.height);
  wbPaperBackground(paper, fl);
  const hasTop = Array.from(L.top.childNodes).some((g) => g.nodeName !== "defs" && g.childNodes.length);
  const [below, above] = await Promise.all([
    wbLoadSvg(wbSerialize(paper)),
    hasTop ? wbLoadSvg(wbSerialize(wbTopLayer(L, fl))) : null,
  ]);
  // A pane's width is often fractional (a share of the notebook's width): the canvas keeps whole pixels,
  // cut as plotly's svgToImg cuts them (assignment truncates), the layers are drawn at the exact size.
  const w = fl.width * scale;
  const h = fl.height * scale;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(below, 0, 0, w, h);
  for (const c of L.canvases) {
    const cw = parseFloat(c.style.width) || fl.width;
    const ch = parseFloat(c.style.height) || fl.height;
    ctx.drawImage(c, 0, 0, cw * scale, ch * scale);
  }
  if (above) ctx.drawImage(above, 0, 0, w, h);
  const blob = await new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the canvas gave no PNG"))), "image/png"),
  );
  return new Uint8Array(await blob.arrayBuffer());
}

// The div as shown, as `format` ("png" | "svg") bytes; null when the fast path does not apply (another
// format, a width/height other than the shown one, a div plotly has not drawn): use Plotly.toImage then.
async function liveImage(gd, { format, width, height, scale }) {
  const fl = gd && gd._fullLayout;
  if (!fl || (format !== "png" && format !== "svg")) return null;
  if ((width && width !== fl.width) || (height && height !== fl.height)) return null;
  if (format === "svg") {
    const text = wbLiveSvg(gd, scale || 1);
    return text === null ? null : new TextEncoder().encode(text);
  }
  return wbLivePng(gd, scale || 1);
}

function wbDataUrlBytes(url) {
  const comma = url.indexOf(",");
  const body = url.slice(comma + 1);
  return url.slice(0, comma).endsWith(";base64")
    ? Uint8Array.from(atob(body), (c) => c.charCodeAt(0))
    : new TextEncoder().encode(decodeURIComponent(body));
}

// The image a kernel asked for ({format, width, height, scale}; width/height null = as shown): the live
// layers when they apply, else (another size or format, or the fast path failed) Plotly.toImage.
// Resolves to {bytes, method: "live" | "toImage", width, height (CSS px), scale, ms, failed (why not live)}.
async function plotImage(Plotly, gd, req) {
  const t0 = performance.now();
  const fl = gd._fullLayout || {};
  const width = req.width || fl.width;
  const height = req.height || fl.height;
  const scale = req.scale || 1;
  let bytes = null;
  let failed = "";
  try {
    bytes = await liveImage(gd, { format: req.format, width, height, scale });
  } catch (err) {
    failed = String(err); // plotly.js's own exporter may still manage
  }
  const method = bytes ? "live" : "toImage";
  if (!bytes) bytes = wbDataUrlBytes(await Plotly.toImage(gd, { format: req.format, width, height, scale }));
  return { bytes, method, width, height, scale, ms: performance.now() - t0, failed };
}
