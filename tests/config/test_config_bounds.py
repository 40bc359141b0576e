"""Issue 21 item 7: a 1 MiB configuration without aliases (17,658 invalid zones) took `check-config` 33 s and
310 MB, and on SIGHUP halved the frame rate for 15 s with 17,700 ERROR lines. Now a file with more values than a
configuration has is refused in one pass over its YAML events, and any report lists the first problems and then
how many more."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

from fallwatch.config.loader import DEFAULT_CONFIG, MAX_CONFIG_BYTES, MAX_REPORTED, MAX_VALUES
from fallwatch.daemon.app.reload import read_config

ZONE = "  - {{name: z{i}, kind: rest, points: [[1.5, 0.5], [0.4, 0.5]]}}"  # invalid: 2 points (the first problem)


def zones_file(path: Path, count: int | None = None) -> Path:
    """``count`` invalid zones, or as many as fit in 1 MiB."""
    lines = ["camera: {name: big}", "mqtt: {enabled: false}", "zones:"]
    size = sum(len(line) + 1 for line in lines)
    i = 0
    while count is None or i < count:
        line = ZONE.format(i=i)
        if size + len(line) + 1 > MAX_CONFIG_BYTES:
            break
        lines.append(line)
        size += len(line) + 1
        i += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def check_config(path: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """`fallwatch check-config` in a child: its result, wall seconds and peak RSS (MB, the child's own)."""
    script = (
        "import re, sys\n"
        "from fallwatch.daemon.cli.main import main\n"
        "try:\n"
        "    code = main(['check-config', sys.argv[1]])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
        "print('peak_kb', hwm, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    peak = re.search(r"^peak_kb (\d+)$", proc.stderr, re.M)
    assert peak, proc.stderr[-2000:]
    return proc, took, int(peak.group(1)) / 1024


def test_a_mebibyte_of_zones_is_refused_fast_in_one_line(tmp_path: Path) -> None:
    big = zones_file(tmp_path / "fallwatch.yaml")
    assert big.stat().st_size > MAX_CONFIG_BYTES - 100  # the file of the report: just under the size limit
    base, base_s, base_mb = check_config(DEFAULT_CONFIG)  # the baseline: the packaged configuration, valid
    assert base.returncode == 0, base.stderr
    proc, took, peak = check_config(big)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("peak_kb")]
    assert len(errors) == 1 and re.fullmatch(
        rf"fallwatch\.yaml:\d+: more than {MAX_VALUES} values; not a fallwatch configuration .*", errors[0]
    ), errors
    # it was 33 s and 310 MB; now about what checking the packaged configuration costs (process start dominates)
    assert took < 3 * base_s + 1, (took, base_s)
    assert peak < base_mb + 40, (peak, base_mb)


def test_many_problems_are_reported_as_the_first_few_and_a_count(tmp_path: Path) -> None:
    path = zones_file(tmp_path / "fallwatch.yaml", count=1000)  # under the value limit: every zone is checked
    proc, _, _ = check_config(path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("peak_kb")]
    assert len(errors) == MAX_REPORTED + 1, errors[-3:]
    assert errors[0] == "fallwatch.yaml:4: zones.0.points: a zone needs at least 3 points, got 2"
    assert errors[-1] == f"fallwatch.yaml: ... and {1000 - MAX_REPORTED} more problems"


def test_a_reload_of_such_a_file_logs_a_bounded_report(tmp_path: Path, caplog) -> None:
    # SIGHUP logged 17,700 ERROR lines for it (and parsed it for 15 s beside the pipeline).
    for count, lines in ((None, 1), (1000, MAX_REPORTED + 1)):
        path = zones_file(tmp_path / "fallwatch.yaml", count)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="fallwatch.daemon.app.reload"):
            assert read_config(path, None) is None
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == lines + 1 and errors[-1].startswith("configuration reload rejected"), errors[-3:]
