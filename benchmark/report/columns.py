"""Column titles and number formats, derived from the metric schema (`benchmark.scoring.metrics.METRICS`):
a new metric gets a column with its own format and direction without editing any table."""
from __future__ import annotations

import math

from benchmark.scoring import metrics as schema  # read at call time: the schema is the one source

# Display names of the paper's metrics; any other metric is shown under its schema name.
TITLES = {"dice": "DSC", "jaccard": "Jaccard", "precision": "Precision", "recall": "Recall",
          "hd95": "HD95 (mm)", "assd": "ASSD (mm)", "failed": "Failed cases"}
ARROW = {"max": "↑", "min": "↓"}
SIGNIFICANT = "†"  # Holm-adjusted p < 0.05 against the baseline


def metric_title(name: str, arrow: bool = False) -> str:
    title = TITLES.get(name, name)
    return f"{title} {ARROW[schema.METRIC_BY_NAME[name].direction]}" if arrow else title


def _spec(name: str) -> str:
    """The schema's format; a count ("d") averaged over seeds is shown with one decimal."""
    return schema.METRIC_BY_NAME[name].format


def fmt_metric(name: str, mean: float, std: float = math.nan) -> str:
    """`mean ± std` in the metric's format ("–" for missing; no ± for a single seed)."""
    if mean is None or math.isnan(mean):
        return "–"
    spec = _spec(name)
    if spec == "d":
        spec = "d" if float(mean).is_integer() and (math.isnan(std) or std == 0) else ".1f"
    one = (lambda x: f"{int(x):d}") if spec == "d" else (lambda x: f"{float(x):{spec}}")
    return one(mean) if math.isnan(std) else f"{one(mean)} ± {one(std)}"


def fmt_signed(name: str, value: float) -> str:
    """A difference in the metric's format, with its sign."""
    if value is None or math.isnan(value):
        return "–"
    spec = _spec(name)
    return f"{value:+{'.1f' if spec == 'd' else spec}}"


def fmt_num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def fmt_ms(mean: float, std: float = math.nan, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def cell(text) -> str:
    """Free text made safe for one markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
