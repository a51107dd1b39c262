"""How the evaluation tools show their metrics: one table on stdout, optionally a json file."""
from typing import Mapping, Optional

from tabulate import tabulate

from ..utils.file_io import atomic_write_json

__all__ = ["report_metrics"]


def report_metrics(metrics: Mapping[str, float], output: Optional[str] = None) -> None:
    """Print ``metrics`` as a one-row table; write them as json to ``output`` if given."""
    print(tabulate([[f"{v:.3f}" for v in metrics.values()]], headers=list(metrics), tablefmt="pipe"))
    if output:
        atomic_write_json(output, dict(metrics), indent=2)
