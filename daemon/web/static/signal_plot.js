"use strict";
// The fall rule's signals over a record or a recording (rules/signals.py computes them) drawn with uPlot:
// spine angle, torso drop, descent rate, "on the floor" (0/1, as the rules hold it), the configured thresholds as dashed lines, the event as a black line.
// Shared by the events view and `fallwatch replay --plot out.html`.
// Threshold lines and the event's moment are drawn on uPlot's own canvas (its draw hook).
function markers(sig) {
  return { hooks: { draw: [u => {
    const ctx = u.ctx, th = sig.thresholds, left = u.bbox.left, right = left + u.bbox.width;
    const line = (scale, v, colour, dash) => {
      const y = u.valToPos(v, scale, true);
      ctx.save(); ctx.strokeStyle = colour; ctx.setLineDash(dash); ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke(); ctx.restore();
    };
    line("deg", th.fall_angle_deg, "#1f77b4", [6, 4]);
    line("bh", th.min_drop, "#d62728", [6, 4]);
    line("bh", th.drop_without_turn, "#d62728", [2, 3]);
    line("bh", th.min_descent_rate, "#2ca02c", [6, 4]);
    if (sig.event_t != null) {
      const x = u.valToPos(sig.event_t, "x", true);
      ctx.save(); ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.beginPath();
      ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke(); ctx.restore();
    }
  }], ready: [u => u.root.parentElement.setAttribute("data-drawn", "1")] } };
}

function plotSignals(box, sig) {
  const opts = {
    width: 640, height: 260, plugins: [markers(sig)],
    scales: { x: { time: false }, deg: { range: [0, 180] }, bh: { auto: true } },
    axes: [{ label: "t (s); black line: the event" }, { scale: "deg", label: "spine angle (deg)" },
           { scale: "bh", side: 1, label: "body heights (/s)", grid: { show: false } }],
    series: [{},
      { label: "spine angle (deg; dashed: fall_angle_deg)", scale: "deg", stroke: "#1f77b4" },
      { label: "torso drop (bh; dashed: min_drop, dotted: drop_without_turn)", scale: "bh", stroke: "#d62728" },
      { label: "descent rate (bh/s; dashed: min_descent_rate)", scale: "bh", stroke: "#2ca02c" },
      { label: "on the floor (1 = yes)", scale: "bh", stroke: "#9467bd", fill: "rgba(148,103,189,0.12)" }],
  };
  new uPlot(opts, [sig.t, sig.spine_angle_deg, sig.drop, sig.descent_rate, sig.on_floor || []], box);
}

