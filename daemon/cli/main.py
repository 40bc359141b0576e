"""The `fallwatch` command line. Each subcommand's work lives in its own module, imported only when used,
so `fallwatch check-config` does not load tflite and `fallwatch replay` does not touch a camera."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

# subcommand -> "module:function"; each function takes the parsed args and returns an exit code.
HANDLERS = {
    "run": "fallwatch.daemon.cli.admin.run:cmd_run",
    "watch": "fallwatch.daemon.cli.admin.watch:cmd_watch",
    "check-config": "fallwatch.daemon.cli.admin.config:cmd_check_config",
    "config": "fallwatch.daemon.cli.admin.config:cmd_config_schema",
    "models": "fallwatch.daemon.cli.admin.models:cmd_models",
    "pose": "fallwatch.daemon.cli.measure.pose:cmd_pose",
    "bench": "fallwatch.daemon.cli.measure.bench:cmd_bench",
    "detect": "fallwatch.daemon.cli.measure.rules:cmd_detect",
    "replay": "fallwatch.daemon.cli.measure.rules:cmd_replay",
    "eval": "fallwatch.daemon.cli.measure.rules:cmd_eval",
    "doctor": "fallwatch.daemon.cli.admin.doctor:cmd_doctor",
    "tune": "fallwatch.daemon.cli.measure.tune:cmd_tune",
    "bench-records": "fallwatch.daemon.cli.measure.bench_records:cmd_bench_records",
    "notify": "fallwatch.daemon.cli.admin.notify:cmd_notify",
}


def _runs(text: str) -> int:
    """--perturb N: a whole number of runs from 0 to 1000."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of runs") from None
    if not 0 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"{n} runs: give 0 to 1000")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fallwatch", description="Fall detection for the rooms of a home, over MQTT.")
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="override log.level",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, config: bool = True, model_dir: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if config:
            p.add_argument(
                "--config",
                "-c",
                default=None,
                help="configuration file (default: $FALLWATCH_CONFIG, /etc/fallwatch/fallwatch.yaml "
                "if present, else the packaged default)",
            )
        if model_dir:
            p.add_argument(
                "--model-dir", default=None, help="model directory (overrides FALLWATCH_MODEL_DIR and models.dir)"
            )
        return p

    p = add("run", "run the daemon: capture -> pose -> rules -> MQTT, debug stream, log", model_dir=True)
    p.add_argument("--source", default=None, help="override camera.source (a video file, v4l2:/dev/video0, rtsp://...)")

    p = sub.add_parser(
        "watch",
        help="every device and camera on an MQTT broker at a glance (night shift view)",
        description="Shows every fallwatch device and camera on a broker: availability, state, "
        "last event and its age; falls and down devices on top.",
    )
    p.add_argument("--host", default="localhost", help="broker host (default localhost)")
    p.add_argument("--port", type=int, default=None, help="broker port (default 1883, 8883 with TLS)")
    p.add_argument("--username", default=None, help="broker user name")
    p.add_argument("--password", default=None, help="broker password (prefer --password-file)")
    p.add_argument("--password-file", default=None, help="file holding the broker password")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--cafile", default=None, help="CA certificate(s) to verify the broker (implies --tls)")
    p.add_argument("--certfile", default=None, help="client certificate (implies --tls)")
    p.add_argument("--keyfile", default=None, help="the client certificate's key")
    p.add_argument("--insecure", action="store_true", help="TLS: do not check the broker's host name")
    p.add_argument("--prefix", default="fallwatch", help="topic prefix above the device ids (default fallwatch)")
    p.add_argument(
        "--stale",
        type=float,
        default=90.0,
        help="seconds without a heartbeat after which a device counts as down, for devices that do not "
        "state their heartbeat period (default 90)",
    )
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument(
        "--wait",
        type=float,
        default=2.0,
        help="with --once: longest wait for the broker's retained messages, in seconds (default 2)",
    )
    p.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")

    p = sub.add_parser("check-config", help="validate a configuration file and print the effective configuration")
    p.add_argument("file", nargs="?", default=None, help="configuration file (default as for run)")

    p = sub.add_parser("config", help="configuration helpers")
    p.add_argument("action", choices=["schema"], help="schema: print the JSON Schema of the configuration")

    p = add("models", "list, fetch or verify the models", model_dir=True)
    p.add_argument("action", choices=["list", "fetch", "verify"])
    p.add_argument("names", nargs="*", help="model names (default: the ones the configuration uses)")

    p = add("pose", "run detector + estimator on still images", model_dir=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")

    p = add("bench", "benchmark the full pipeline on a video clip", model_dir=True)
    p.add_argument("--source", required=True, help="video file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--loops", type=int, default=1, help="play the clip this many times (memory growth check)")
    p.add_argument(
        "--cameras",
        type=int,
        default=None,
        metavar="N",
        help="open the clip as N cameras sharing one pose engine (fair scheduling; per-camera figures)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="VIDEO",
        help="also run this clip first and print the source's model work per frame over its (e.g. night / day)",
    )

    p = add("detect", "run the whole pipeline on video files and print fall events", model_dir=True)
    p.add_argument("videos", nargs="+")
    p.add_argument("--json", action="store_true", help="exactly one JSON event per line on stdout")
    p.add_argument("--record", default=None, help="write the pose recording (JSONL) here")

    p = add("replay", "run only the rules over pose recordings (JSONL)")
    p.add_argument("recordings", nargs="+")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--plot",
        default=None,
        metavar="OUT.html",
        help="also draw the rule's signals over the recording (spine angle, torso drop, descent rate, "
        "thresholds, the fall) into this HTML file",
    )

    p = add("eval", "evaluate labelled clips (video or JSONL) against their manifest", model_dir=True)
    p.add_argument("manifests", nargs="+")
    p.add_argument("--json", action="store_true")
    p.add_argument("--strategy", choices=["fallwatch", "ambianic"], default=None, help="override rules.strategy")
    p.add_argument(
        "--perturb",
        type=_runs,
        default=0,
        metavar="N",
        help="also replay every recording N times under seeded perturbations of the size that separates two CPUs "
        "(keypoint noise, dropped frames, timing jitter) and report the share of runs whose decision is unchanged",
    )

    p = add(
        "doctor", "check the system, Edge TPU, cameras, models, configuration, broker and debug port", model_dir=True
    )
    p.add_argument("--json", action="store_true", help="the same checks as one JSON object")

    p = add("tune", "propose rule settings from your labelled event records (and labelled manifests)", model_dir=True)
    p.add_argument("--records", default=None, help="event records directory (default: events.dir of the configuration)")
    p.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="M.json",
        help="labelled clips whose falls must stay caught (repeatable)",
    )
    p.add_argument(
        "--write",
        default=None,
        metavar="FILE",
        help="write a new configuration file with the proposed settings (never the one in use)",
    )

    p = add("notify", "notifications through Apprise (notify.urls): --test sends one to every URL now")
    p.add_argument("--test", action="store_true", required=True, help="send one test notification to every URL")

    p = add("bench-records", "pipeline latency while event clips are written, against none", model_dir=True)
    p.add_argument("--source", required=True, help="video file (played at its own frame rate)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds without / with records")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_level:
        logging.basicConfig(
            level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    from fallwatch.config.loader import ConfigError

    module_name, func_name = HANDLERS[args.command].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except ConfigError as exc:  # every command refuses a bad configuration the same way: each error, one line
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`fallwatch config schema | head`): stop quietly, as a C tool killed by SIGPIPE
        # would; stdout now points nowhere, so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
