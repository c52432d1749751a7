"""plotly figures for ``reftlab.analysis`` tables, and the one-file HTML dashboard.

The only place in reftlab that imports plotly. Every function returns a
``plotly.graph_objects.Figure``; nothing is shown by side effect (call ``fig.show()``).
"""

from .concepts import (
    auroc_bars,
    concept_figures,
    concept_report_html,
    cosine_heatmap,
    roc_curves,
    steering_curves,
    write_concept_report,
)
from .dashboard import dashboard_html, dashboard_main, page_html, write_dashboard, write_page
from .figures import (
    angle_heatmap,
    attribution_bars,
    decode_bars,
    patch_heatmap,
    projection_heatmap,
    projection_shift,
)
from .search import search_figures, write_search_page

__all__ = [
    "angle_heatmap",
    "attribution_bars",
    "auroc_bars",
    "concept_figures",
    "concept_report_html",
    "cosine_heatmap",
    "dashboard_html",
    "dashboard_main",
    "decode_bars",
    "page_html",
    "patch_heatmap",
    "projection_heatmap",
    "projection_shift",
    "roc_curves",
    "search_figures",
    "steering_curves",
    "write_concept_report",
    "write_dashboard",
    "write_page",
    "write_search_page",
]
