"""LiverBench benchmark: the `liverbench` command, runner, evaluation, timing, W&B and report."""
