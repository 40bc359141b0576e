"""`fallwatch notify --test`: one test notification to every URL of ``notify:``, now, each said delivered or not."""

from __future__ import annotations

import argparse
import sys

from fallwatch.config.loader import default_config_path, load_config
from fallwatch.daemon.alarms.notifications import NotifyError, send_test


def cmd_notify(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or default_config_path())
    try:
        results = send_test(cfg.notify, camera=cfg.camera.name if cfg.cameras is None else next(iter(cfg.cameras)))
    except NotifyError as exc:
        print(f"fallwatch notify: {exc}", file=sys.stderr)
        return 2
    if not results:
        print(
            "fallwatch notify: no notify.urls (nor notify.urls_file) in the configuration: nothing to send",
            file=sys.stderr,
        )
        return 2
    for where, ok in results:
        print(f"{'sent' if ok else 'FAILED'}: {where}")
    return 0 if all(ok for _, ok in results) else 1
