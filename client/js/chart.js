// Charts with Observable Plot. esbuild bundles this into
// client/bundles/chart.js (`cargo xtask duckdb-bundle`); the Rust side
// (client/src/components/chart_panel.rs) imports it with a dynamic import()
// the first time a chart is shown. The data is already an aggregation over
// the whole result, computed by the engine that ran the query: this module
// only draws it.

import * as Plot from "@observablehq/plot";

const TIME_TYPES = /^(DATE|TIMESTAMP|TIMESTAMP WITH TIME ZONE|TIMESTAMPTZ|TIMESTAMP_S|TIMESTAMP_MS|TIMESTAMP_NS)$/i;

/**
 * Draws `spec` into `container` (its previous chart is replaced).
 *
 * spec: `{kind: "bar"|"line"|"scatter"|"histogram", x, xType, y, color,
 * width, height, title}`; `data`: rows of `{x, y, color}` (x may be the
 * lower edge of a bin with `x2` its upper edge). Returns the number of marks drawn.
 */
export function renderChart(container, spec, data) {
  const time = TIME_TYPES.test(spec.xType ?? "");
  const rows = data.map((row) => ({
    ...row,
    x: time && row.x !== null ? new Date(row.x) : row.x,
  }));
  const color = spec.color ? { legend: true } : undefined;
  const stroke = spec.color ? "color" : "currentColor";
  const fill = spec.color ? "color" : "steelblue";
  let marks;
  switch (spec.kind) {
    case "histogram":
      if (rows.some((row) => row.x2 === undefined || row.x2 === null)) {
        // Bins labelled by their start only (time bins from the server): bars.
        marks = [Plot.barY(rows, { x: "x", y: "y", fill }), Plot.ruleY([0])];
        break;
      }
      marks = [Plot.rectY(rows, { x1: "x", x2: "x2", y: "y", fill, insetLeft: 0.5, insetRight: 0.5 }), Plot.ruleY([0])];
      break;
    case "line":
      marks = [Plot.lineY(rows, { x: "x", y: "y", stroke, z: spec.color ? "color" : null, sort: "x" }), Plot.ruleY([0])];
      break;
    case "scatter":
      marks = [Plot.dot(rows, { x: "x", y: "y", stroke, r: 2.5, fill: spec.color ? "color" : "none" })];
      break;
    default:
      marks = [Plot.barY(rows, { x: "x", y: "y", fill, tip: true }), Plot.ruleY([0])];
  }
  const figure = Plot.plot({
    width: spec.width ?? 640,
    height: spec.height ?? 280,
    marginLeft: 60,
    x: {
      label: spec.x,
      type: time ? "utc" : spec.kind === "bar" ? "band" : undefined,
      tickRotate: spec.kind === "bar" && rows.length > 12 ? -45 : 0,
    },
    y: { label: spec.y, grid: true },
    color,
    ariaLabel: spec.title,
    ariaDescription: spec.description,
    marks,
  });
  figure.setAttribute("data-testid", "plot");
  // Plot names each mark's <g> with aria-label: give it the group role that
  // allows one (the container is an image described by its label and data table).
  for (const group of figure.querySelectorAll("g[aria-label]")) group.setAttribute("role", "group");
  // Stable test ids on the drawn marks (Plot labels each mark's group).
  const tags = { bar: "chart-bar", line: "chart-line", dot: "chart-dot", rect: "chart-bin" };
  for (const [mark, id] of Object.entries(tags)) {
    for (const node of figure.querySelectorAll(`g[aria-label="${mark}"] > *`)) node.setAttribute("data-testid", id);
  }
  container.replaceChildren(figure);
  return rows.length;
}
