"""Synthesis: training and evaluation samples from ingested datasets.

`segments` picks coherent page runs, `template` and `llm` write long-document QA pairs from
them, `needles` builds needle-in-a-haystack samples, and `run.synth` writes a samples file.
"""
