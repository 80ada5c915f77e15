"""Long-document VQA, needle retrieval and multimodal retrieval-head evaluation."""
