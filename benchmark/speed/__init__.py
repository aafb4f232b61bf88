"""Speed benchmarks (run as `python -m benchmark.speed.<name>`); figures go to docs/speed.md."""
