"""mmlong: long-context multimodal data, training and evaluation for VLMs such as Qwen2.5-VL.

Importing the package is cheap; heavy libraries load inside the functions that need them.
Public API: `mmlong.store` (read datasets), `mmlong.tokens` (exact Qwen2.5-VL token counts),
`mmlong.messages` (documents as Qwen2.5-VL chat messages), `mmlong.ingest.ingest`.
"""

__version__ = "0.1.0"
