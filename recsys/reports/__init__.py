"""Comparison reports: ``recsys compare`` (compare.py) -> summaries (summary.py), plots (plots.py),
the report document (document.py) rendered to Markdown/HTML (render.py); peer rows (peers.py)."""
