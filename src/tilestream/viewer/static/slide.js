/* The slide page: Deep Zoom viewer, overlays, clicked tile, metadata. */
"use strict";

const state = {
  id: ts.param("id"),
  meta: null,
  viewer: null,
  tilesLoaded: 0,
  grid: null,
  rois: null,
  tissue: null,
  qc: null,
  selected: null,
  show: { tissue: false, grid: false, rois: false, qc: false },
};
window.tsState = state; // for tests and the curious

const COLORS = {
  kept: "rgba(22, 163, 74, 0.95)", keptFill: "rgba(22, 163, 74, 0.18)",
  rejected: "rgba(220, 38, 38, 0.9)", rejectedFill: "rgba(220, 38, 38, 0.10)",
  roi: "rgba(234, 179, 8, 1)", selected: "rgba(37, 99, 235, 1)",
};

function row(table, key, value) {
  table.append(ts.el("tr", {}, ts.el("th", {}, key), ts.el("td", {}, value)));
}

function showMeta(meta) {
  document.getElementById("title").textContent = meta.name;
  document.getElementById("subtitle").textContent = meta.run ? `run ${meta.run}` : "";
  if (meta.has_tfrecord) {
    const link = document.getElementById("mosaic-link");
    link.href = `/mosaic.html?id=${ts.q(meta.id)}`;
    link.hidden = false;
  }
  const t = document.querySelector("#meta tbody");
  const mpp = meta.mpp ? `${meta.mpp[0].toFixed(4)} × ${meta.mpp[1].toFixed(4)} µm/px` : "unknown";
  row(t, "file", meta.slide_file || "–");
  if (meta.stale) row(t, "stale outputs", `not shown: ${meta.stale}`);
  if (meta.slide_error) row(t, "error", meta.slide_error);
  if (meta.dimensions) row(t, "size", `${meta.dimensions[0]} × ${meta.dimensions[1]} px`);
  row(t, "mpp", mpp);
  if (meta.objective_power) row(t, "objective", `${meta.objective_power}×`);
  if (meta.vendor) row(t, "vendor", meta.vendor);
  if (meta.backend) row(t, "backend", meta.backend);
  if (meta.status) row(t, "extraction", `${meta.status}: ${ts.fmt(meta.tiles)} of ${ts.fmt(meta.grid)} tiles kept`);
  if (meta.tile_px) row(t, "tiles", `${meta.tile_px} px, ${meta.tile_um} µm`);
  if (meta.error) row(t, "failure", meta.error);
  const levels = document.querySelector("#levels tbody");
  (meta.levels || []).forEach((lv, i) => {
    levels.append(ts.el("tr", {}, ts.el("td", {}, i),
      ts.el("td", {}, `${lv.dimensions[0]} × ${lv.dimensions[1]}`), ts.el("td", {}, lv.downsample)));
  });
  const assoc = document.getElementById("associated");
  for (const name of meta.associated || []) {
    assoc.append(ts.el("figure", {},
      ts.el("img", { src: `/api/associated?id=${ts.q(meta.id)}&name=${ts.q(name)}`, alt: name, "data-name": name }),
      ts.el("figcaption", {}, name)));
  }
  if (!(meta.associated || []).length) assoc.textContent = "none";
  const props = document.querySelector("#properties tbody");
  const entries = Object.entries(meta.properties || {});
  document.getElementById("props-count").textContent = `${entries.length} properties`;
  for (const [k, v] of entries) row(props, k, v);
}

/* -- overlays ------------------------------------------------------------- */

function makeCanvas(viewer) {
  const canvas = document.createElement("canvas");
  canvas.className = "overlay";
  canvas.id = "overlay";
  viewer.canvas.appendChild(canvas);
  return canvas;
}

function imageTransform(viewer) {
  // image pixel -> viewer element pixel: a scale and an offset (no rotation)
  const a = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
  const b = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 1000));
  return { sx: (b.x - a.x) / 1000, sy: (b.y - a.y) / 1000, ox: a.x, oy: a.y };
}

function draw() {
  const viewer = state.viewer;
  const canvas = state.canvas;
  if (!viewer || !canvas || !viewer.world.getItemCount()) return;
  const ratio = window.devicePixelRatio || 1;
  const w = viewer.canvas.clientWidth, h = viewer.canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const t = imageTransform(viewer);
  const X = (x) => t.ox + x * t.sx, Y = (y) => t.oy + y * t.sy;
  const visible = (x, y, tw, th) => X(x + tw) >= 0 && X(x) <= w && Y(y + th) >= 0 && Y(y) <= h;

  if (state.show.tissue && state.tissue && state.tissue.complete && state.meta.dimensions) {
    const [W, H] = state.meta.dimensions;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(state.tissue, X(0), Y(0), W * t.sx, H * t.sy);
  }
  if (state.show.grid && state.grid) {
    const size = state.grid.tile_w || 0;
    const thin = size * t.sx < 6;
    const drawSet = (tiles, stroke, fill, getSize) => {
      ctx.strokeStyle = stroke;
      ctx.fillStyle = fill;
      ctx.lineWidth = 1;
      for (const tile of tiles) {
        const [x, y] = tile;
        const [tw, th] = getSize(tile);
        if (!visible(x, y, tw, th)) continue;
        ctx.fillRect(X(x), Y(y), tw * t.sx, th * t.sy);
        if (!thin) ctx.strokeRect(X(x) + 0.5, Y(y) + 0.5, tw * t.sx - 1, th * t.sy - 1);
      }
    };
    drawSet(state.grid.rejected, COLORS.rejected, COLORS.rejectedFill, () => [size, size]);
    drawSet(state.grid.kept, COLORS.kept, COLORS.keptFill, (tile) => [tile[2], tile[3]]);
  }
  if (state.show.rois && state.rois) {
    ctx.strokeStyle = COLORS.roi;
    ctx.lineWidth = 2;
    for (const roi of state.rois) {
      for (const ring of [roi.exterior, ...roi.holes]) {
        ctx.beginPath();
        ring.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
        ctx.closePath();
        ctx.stroke();
      }
    }
  }
  if (state.show.qc && state.qc) {
    ctx.lineWidth = 2;
    for (const cls of state.qc.classes) {
      ctx.strokeStyle = `rgb(${cls.color.join(",")})`;
      for (const rings of cls.polygons) {
        for (const ring of rings) {
          ctx.beginPath();
          ring.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
          ctx.closePath();
          ctx.stroke();
        }
      }
    }
  }
  if (state.selected && state.selected.width) {
    const s = state.selected;
    ctx.strokeStyle = COLORS.selected;
    ctx.lineWidth = 3;
    ctx.strokeRect(X(s.x), Y(s.y), s.width * t.sx, s.height * t.sy);
  }
}

async function loadOverlays(meta) {
  const id = ts.q(meta.id);
  const note = [];
  const tissueBox = document.getElementById("toggle-tissue");
  if (meta.dz) {
    const img = new Image();
    img.onload = draw;
    img.src = `/api/tissue.png?id=${id}`;
    state.tissue = img;
  } else {
    tissueBox.disabled = true;
  }
  const gridBox = document.getElementById("toggle-grid");
  if (meta.has_grid) {
    state.grid = await ts.json(`/api/grid?id=${id}`);
  } else {
    gridBox.disabled = true;
    note.push("no extraction tile grid");
  }
  const roiBox = document.getElementById("toggle-rois");
  if (meta.has_roi) {
    const rois = await ts.json(`/api/rois?id=${id}`);
    state.rois = rois.rois;
    document.getElementById("roi-file").textContent = `(${rois.file}, ${rois.rois.length})`;
  } else {
    roiBox.disabled = true;
    note.push("no ROI file");
  }
  const qcBox = document.getElementById("toggle-qc");
  if (meta.has_qc) await loadQC(id);
  else qcBox.disabled = true;
  document.getElementById("overlay-note").textContent = note.join("; ");
  for (const [name, box] of [["tissue", tissueBox], ["grid", gridBox], ["rois", roiBox], ["qc", qcBox]]) {
    box.addEventListener("change", () => { state.show[name] = box.checked; draw(); });
  }
}

async function loadQC(id) {
  // areas in mm², tiles rejected per reason, and the outline polygons of the run folder
  const qc = await ts.json(`/api/qc?id=${id}`);
  state.qc = qc;
  document.getElementById("qc-panel").hidden = false;
  document.getElementById("qc-file").textContent = qc.outlines ? `(${qc.outlines})` : "(no outline file)";
  const areas = document.querySelector("#qc-areas tbody");
  const colors = Object.fromEntries(qc.classes.map((c) => [c.name.toLowerCase(), c.color]));
  for (const [key, mm2] of Object.entries(qc.areas_mm2)) {
    const name = key.replace(/_mm2$/, "");
    const color = colors[name];
    const swatch = ts.el("span", { class: "swatch", style: color ? `background:rgb(${color.join(",")})` : null });
    areas.append(ts.el("tr", {}, ts.el("th", {}, swatch, name), ts.el("td", {}, `${mm2.toFixed(3)} mm²`)));
  }
  if (!Object.keys(qc.areas_mm2).length) row(areas, "–", "no areas recorded");
  const rejected = document.querySelector("#qc-rejected tbody");
  for (const [reason, n] of Object.entries(qc.rejected)) row(rejected, reason, n);
}

/* -- clicked tile --------------------------------------------------------- */

async function selectAt(x, y) {
  const hit = await ts.json(`/api/tile_at?id=${ts.q(state.id)}&x=${Math.floor(x)}&y=${Math.floor(y)}`);
  state.selected = hit.status === "none" ? null : hit;
  const panel = document.getElementById("tile-panel");
  const img = document.getElementById("tile-image");
  const info = document.querySelector("#tile-info tbody");
  info.replaceChildren();
  panel.hidden = false;
  if (hit.image) {
    img.hidden = false;
    img.src = hit.image;
  } else {
    img.hidden = true;
    img.removeAttribute("src");
  }
  row(info, "status", hit.status === "rejected" ? `rejected (${hit.reason})` : hit.status);
  if (hit.status !== "none") {
    row(info, "x, y", `${hit.x}, ${hit.y}`);
    row(info, "size", `${hit.width} × ${hit.height} (level 0)`);
  } else {
    row(info, "point", `${hit.x}, ${hit.y}`);
  }
  if (hit.status === "kept") {
    row(info, "record", hit.record);
    row(info, "location", `${hit.loc_x}, ${hit.loc_y}`);
    row(info, "level", hit.level);
    for (const key of ["tissue", "grayspace", "whitespace", "blur"]) row(info, key, ts.fmt(hit[key]));
    row(info, "blurry", hit.blurry ? "yes" : "no");
  }
  draw();
  return hit;
}

/* -- start ---------------------------------------------------------------- */

async function start() {
  const meta = await ts.json(`/api/slide?id=${ts.q(state.id)}`);
  state.meta = meta;
  showMeta(meta);
  if (!meta.dz) {
    document.getElementById("osd").append(ts.el("p", { class: "message" }, meta.slide_error || "no image"));
    return;
  }
  const viewer = OpenSeadragon({
    id: "osd",
    prefixUrl: "/static/openseadragon/images/",
    tileSources: meta.dz.url,
    showNavigator: true,
    maxZoomPixelRatio: 2,
    gestureSettingsMouse: { clickToZoom: false },
  });
  state.viewer = viewer;
  state.canvas = makeCanvas(viewer);
  viewer.addHandler("tile-loaded", () => { state.tilesLoaded += 1; });
  viewer.addHandler("update-viewport", draw);
  viewer.addHandler("resize", draw);
  viewer.addHandler("canvas-click", (event) => {
    if (!event.quick) return;
    const p = viewer.viewport.viewerElementToImageCoordinates(event.position);
    selectAt(p.x, p.y);
  });
  viewer.addHandler("open", async () => {
    const x = ts.param("x"), y = ts.param("y");
    if (x !== null && y !== null) {
      const hit = await selectAt(Number(x), Number(y));
      if (hit.width) {
        const r = viewer.viewport.imageToViewportRectangle(hit.x, hit.y, hit.width, hit.height);
        viewer.viewport.fitBounds(new OpenSeadragon.Rect(r.x - r.width, r.y - r.height, 3 * r.width, 3 * r.height));
      }
    }
  });
  await loadOverlays(meta);
  draw();
}

start().catch((err) => {
  document.getElementById("subtitle").textContent = `Error: ${err.message}`;
});
