"""Commands an operator runs: run, watch, doctor, check-config, models, notify."""
