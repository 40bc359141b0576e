"""`fallwatch models list|fetch|verify`: what is known, what is present and whether it checks out.

Exit codes: 0 fine; 1 a model is missing, fails its sha256 or could not be fetched; 2 bad configuration or
an unknown model name.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from fallwatch.config.loader import load_config
from fallwatch.pose.edgetpu_stack import cpu_runtime, runtime_versions, tpu_runtime
from fallwatch.pose.fetch import MISMATCH, MISSING, OK, UNPINNED, configured_models, fetch_model, model_status
from fallwatch.pose.models import MODELS, ModelError, resolve_model_dir, sha256_of

log = logging.getLogger(__name__)

_VERIFIED_TEXT = {OK: "sha256 ok", MISMATCH: "MISMATCH", UNPINNED: "unpinned", MISSING: "-"}


def cmd_models(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    model_dir = resolve_model_dir(args.model_dir, config.models.dir)
    required, tpu = configured_models(config.pose.detector, config.pose.estimator, config.pose.backend)
    names = list(args.names or [])
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model {unknown[0]!r}; known: {', '.join(sorted(MODELS))}", file=sys.stderr)
        return 2
    if args.action == "list":
        return list_models(model_dir, required, tpu, names or None)
    if args.action == "fetch":
        return fetch_models(model_dir, names or required + tpu)
    return verify_models(model_dir, required, tpu, names or None)


def list_models(
    model_dir: Path, required: Sequence[str], tpu: Sequence[str] = (), names: Optional[Sequence[str]] = None
) -> int:
    # RUNTIME: the TFLite runtime (module-version) that runs the model here; Edge TPU builds prefer tflite_runtime
    versions = runtime_versions()
    runtimes = {
        edgetpu: f"{module}-{versions[module]}" if module else "none"
        for edgetpu, module in ((False, cpu_runtime()), (True, tpu_runtime()))
    }
    rows = [("NAME", "FILE", "KIND", "RUNS ON", "PRESENT", "VERIFIED", "CONFIG", "RUNTIME")]
    for spec in (MODELS[n] for n in (names or MODELS)):
        status = model_status(spec, model_dir)
        rows.append(
            (
                spec.name,
                spec.file,
                spec.kind,
                "edgetpu" if spec.edgetpu else "cpu",
                "no" if status == MISSING else "yes",
                _VERIFIED_TEXT[status],
                "needed" if spec.name in required else "tpu" if spec.name in tpu else "",
                runtimes[spec.edgetpu],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"model directory: {model_dir}")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def fetch_models(model_dir: Path, names: Sequence[str]) -> int:
    """Fetch each model unless it is already present and checks out; exit 1 if any fetch failed."""
    failed = 0
    for name in names:
        spec = MODELS[name]
        status = model_status(spec, model_dir)
        if status == OK:
            print(f"{name}: present and verified ({model_dir / spec.file})")
            continue
        if status == UNPINNED:
            print(f"{name}: present, unpinned (no published sha256), not downloaded again ({model_dir / spec.file})")
            continue
        if status == MISMATCH:
            print(f"{name}: {model_dir / spec.file} fails its sha256 check; downloading it again", file=sys.stderr)
        try:
            result = fetch_model(name, model_dir, progress=sys.stderr)
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if result.pinned:
            print(f"{name}: installed and verified ({result.path})")
        else:
            print(f"{name}: installed {result.path}")
            print(
                f"warning: {name} is UNPINNED: no published sha256 is known, so the download could not be "
                f"checked; its sha256 is {result.sha256} - compare it with a trusted source",
                file=sys.stderr,
            )
    return 1 if failed else 0


def verify_models(
    model_dir: Path, required: Sequence[str], tpu: Sequence[str] = (), names: Optional[Sequence[str]] = None
) -> int:
    """Check every present model (or ``names``) and that the required ones exist; exit 1 on any problem.
    A missing Edge TPU build is only noted: with backend auto the CPU models run instead."""
    if names:
        checked, must_exist = list(names), set(names)
    else:
        present = [n for n, s in MODELS.items() if (model_dir / s.file).is_file()]
        checked = present + [n for n in [*required, *tpu] if n not in present]
        must_exist = set(required)
    bad = 0
    print(f"model directory: {model_dir}")
    for name in checked:
        spec = MODELS[name]
        status = model_status(spec, model_dir)
        path = model_dir / spec.file
        if status == OK:
            print(f"{name}: ok ({path})")
        elif status == UNPINNED:
            print(f"{name}: unpinned - no published sha256 to check {path} against; its sha256 is {sha256_of(path)}")
        elif status == MISMATCH:
            bad += 1
            print(
                f"{name}: {path} fails its sha256 check (expected {spec.sha256}); run: fallwatch models fetch {name}",
                file=sys.stderr,
            )
        elif name in must_exist:
            bad += 1
            print(f"{name}: {path} is missing; run: fallwatch models fetch {name}", file=sys.stderr)
        else:
            print(f"{name}: not present - an Edge TPU would not be used; run: fallwatch models fetch {name}")
    return 1 if bad else 0
