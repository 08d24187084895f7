"""Reports: PNG plots (with their data as CSV), a self-contained HTML report, a Markdown summary.

Importing this package does not import matplotlib; the plot functions import it lazily
with the non-interactive Agg backend.
"""

from attributor.reports.document import Section, Table
from attributor.reports.html import write_html_report
from attributor.reports.markdown import write_markdown_report
from attributor.reports.plots import (
    plot_run_comparison,
    plot_score_distribution_by_class,
    plot_self_influence_by_group,
    plot_top_influential,
)

__all__ = [
    "Section",
    "Table",
    "write_html_report",
    "write_markdown_report",
    "plot_self_influence_by_group",
    "plot_score_distribution_by_class",
    "plot_top_influential",
    "plot_run_comparison",
]
