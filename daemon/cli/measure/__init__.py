"""Commands that measure: pose, bench, detect/replay/eval, tune, bench-records."""
