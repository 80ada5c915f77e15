"""Ingest: PDFs (and later webpages and videos) into interleaved datasets.

`ingest(paths, out, preset=...)` runs a collection; `pdf` holds the PyMuPDF page logic.
"""

from mmlong.ingest.run import IngestOptions, IngestReport, TokenBudget, ingest

__all__ = ["IngestOptions", "IngestReport", "TokenBudget", "ingest"]
