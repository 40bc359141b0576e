"""`fallwatch run`: the service (daemon/app/service.py) with its signals, as systemd starts it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from fallwatch.config.loader import default_config_path, load_config
from fallwatch.daemon.app.service import Daemon
from fallwatch.daemon.app.stop_signals import Shutdown
from fallwatch.daemon.capture.sources import SourceError
from fallwatch.daemon.telemetry.logsetup import setup_logging

log = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
    config_arg = getattr(args, "config", None)
    cfg = load_config(config_arg)  # a ConfigError is reported by the CLI: one line per error, exit 2
    config_path = Path(config_arg) if config_arg else default_config_path()
    target = setup_logging(getattr(args, "log_level", None) or cfg.log.level)
    log.debug("logging to %s", target)
    source = getattr(args, "source", None)
    if source and cfg.cameras is not None:
        print(f"fallwatch: --source {source}: not with cameras: (each camera has its source there)", file=sys.stderr)
        return 2
    if source:
        try:
            cfg.camera.source = source
        except ValueError as exc:
            print(f"fallwatch: --source {source}: {exc}", file=sys.stderr)
            return 2
    daemon = Daemon(
        cfg,
        config_path=config_path,
        source=source,
        model_dir=getattr(args, "model_dir", None),
        log_level_override=getattr(args, "log_level", None),
    )
    signals = daemon.stop_signals().install() if threading.current_thread() is threading.main_thread() else None
    try:
        return daemon.run()
    except Shutdown:
        return 0
    except SourceError as exc:
        print(f"fallwatch: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # The few errors that mean "this setup cannot work", each one line naming what to fix.
        if type(exc).__name__ in ("ModelError", "BackendError", "MqttError"):
            print(f"fallwatch: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        if signals is not None:
            signals.done()  # disarms the stop deadline: the shutdown finished
        if daemon.exit_at_once:
            logging.shutdown()
            os._exit(daemon.exit_code)
