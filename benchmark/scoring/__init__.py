"""Scoring: the metric table, `liverbench evaluate`, real-scan (external) sets and scoring."""
