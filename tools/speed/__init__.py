"""Speed benchmarks (run as `python -m tools.speed.<name>`); figures go to docs/speed.md."""
