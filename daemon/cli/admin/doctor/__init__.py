"""`fallwatch doctor`: one line per check (ok / warn / fail, with the fix) for a Pi owner when something is off.

A check fails when the daemon cannot work as configured; it warns when the daemon works but worse than it could
(an Edge TPU left unused, a Coral on a USB 2 port). Nothing here can hang: the TPU probe runs in a child process
with a timeout, the broker connect has a timeout, sysfs and /proc reads are instant.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Optional

from fallwatch.config.loader import ConfigError, default_config_path, load_config
from fallwatch.config.schema import Config
from fallwatch.daemon.cli.admin.doctor.cameras import check_cameras
from fallwatch.daemon.cli.admin.doctor.inference import (
    check_coral_usb,
    check_crash_marker,
    check_library,
    check_probe,
    check_runtimes,
    coral_devices,
)
from fallwatch.daemon.cli.admin.doctor.report import Check, Environment
from fallwatch.daemon.cli.admin.doctor.services import check_debug_bind, check_models, check_mqtt
from fallwatch.daemon.cli.admin.doctor.system import check_board, check_os, check_python
from fallwatch.pose import edgetpu_stack

__all__ = [
    "Check",
    "Environment",
    "check_board",
    "check_cameras",
    "check_coral_usb",
    "check_library",
    "cmd_doctor",
    "run_checks",
]


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, getattr(args, "model_dir", None))
    if args.json:
        print(
            json.dumps(
                {
                    "checks": [asdict(c) for c in checks],
                    "summary": {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")},
                }
            )
        )
    else:
        for check in checks:
            print(check.line(), flush=True)
    return 1 if any(c.status == "fail" for c in checks) else 0


def run_checks(
    config_file: Optional[str] = None, model_dir: Optional[str] = None, env: Optional[Environment] = None
) -> list[Check]:
    env = env or Environment()
    checks = [check_os(env), check_python()]
    try:
        cfg = load_config(config_file)
        checks.append(Check("ok", "config", f"{config_file or default_config_path()} is valid"))
    except ConfigError as exc:
        checks.append(Check("fail", "config", "; ".join(exc.errors), "correct the file; see fallwatch check-config"))
        cfg = Config()
    from fallwatch.pose.models import resolve_model_dir

    models_dir = resolve_model_dir(model_dir, cfg.models.dir)
    wants_tpu = cfg.pose.backend != "cpu"
    must_tpu = cfg.pose.backend == "edgetpu"
    checks += check_runtimes()
    package = edgetpu_stack.library_package(env.dpkg_query)
    library = edgetpu_stack.find_library()
    coral_plugged = wants_tpu and bool(coral_devices(env.sysfs))
    checks.append(check_library(library, package, must_tpu, coral_plugged))
    checks.append(check_coral_usb(env.sysfs, wants_tpu and library is not None, must_tpu))
    checks.append(check_board(env, coral_plugged or (wants_tpu and library is not None)))
    checks.append(check_crash_marker(cfg, package))
    checks.append(check_probe(cfg, models_dir, library, package, must_tpu))
    checks.append(check_cameras(cfg, env))
    checks.append(check_models(cfg, models_dir, library is not None))
    checks.append(check_mqtt(cfg))
    checks.append(check_debug_bind(cfg, env.proc))
    return checks
