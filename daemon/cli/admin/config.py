"""`fallwatch check-config [FILE]` and `fallwatch config schema`.

check-config prints the effective configuration (defaults filled in, ${ENV} substituted, secrets masked)
and exits 0, or prints every error, one line each, on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fallwatch.config.loader import default_config_path, effective_config_yaml, load_config
from fallwatch.config.schema import Config

log = logging.getLogger(__name__)


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or default_config_path()
    config = load_config(path)  # a ConfigError is reported by the CLI: one line per error, exit 2
    sys.stdout.write(f"# effective configuration of {path} (secrets masked)\n")
    sys.stdout.write(effective_config_yaml(config))
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    json.dump(Config.model_json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
