"""Ingest: PDFs (PyMuPDF), webpages (HTML, screenshots) and videos into interleaved datasets.

`ingest(paths, out, preset=...)` runs a collection (`run`); `inputs` expands and checks the
inputs; `pdf`, `web` and `video` turn one source into items; `options` holds the preset's
settings.
"""

from mmlong.ingest.options import IngestOptions
from mmlong.ingest.run import IngestReport, ingest

__all__ = ["IngestOptions", "IngestReport", "ingest"]
