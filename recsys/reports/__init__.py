"""Comparison reports: run records and their files (runs.py) -> summaries (summary.py), plots (plots.py),
the report document (document.py) rendered to Markdown/HTML (render.py); peer rows (peers.py).
``recsys compare`` runs the experiments (training/compare.py) and writes the report with these."""
