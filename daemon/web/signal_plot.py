"""The rule's signals over a record, as the events view plots them (``record_signals``: run in the offload worker,
a fresh process, so this module imports little), and ``fallwatch replay REC.jsonl --plot out.html``: the same plot
as one self-contained HTML file (uPlot and the plot code inlined, so it opens anywhere without a network)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional

STATIC = Path(__file__).resolve().parent / "static"


def plot_html(signals: dict[str, Any], title: str) -> str:
    def static(name: str) -> str:
        return (STATIC / name).read_text(encoding="utf-8")

    data = json.dumps(signals).replace("</", "<\\/")  # nothing in the data can close the script element
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{static("vendor/uPlot.min.css")}
body {{ font: 14px system-ui, sans-serif; margin: 14px; }}</style>
<script>{static("vendor/uPlot.iife.min.js")}</script>
<script>{static("signal_plot.js")}</script></head>
<body><h1 style="font-size:16px">{html.escape(title)}</h1><div class="plot" id="plot"></div>
<script>plotSignals(document.getElementById("plot"), {data});</script></body></html>
"""


def write_plot(path: Path, signals: dict[str, Any], title: str) -> None:
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(
            f"--plot {path}: only .html is written (an interactive uPlot chart); "
            "open it in a browser and save an image from there if needed"
        )
    path.write_text(plot_html(signals, title), encoding="utf-8")


def record_signals(pose_path: str, settings: Any, track: Optional[int], extra: dict) -> bytes:
    """The rule's signals over a record's pose recording and ``extra``, as JSON (runs in the offload worker)."""
    from fallwatch.rules.recording import read_recording
    from fallwatch.rules.signals import fall_signals

    out = {**fall_signals(list(read_recording(Path(pose_path))), settings, track=track), **extra}
    return json.dumps(out, default=str, allow_nan=False).encode()
