"""Evaluation: long-document VQA, needle retrieval, vision-text compression, long-video QA and
multimodal retrieval heads."""
