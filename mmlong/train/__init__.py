"""Training: packed samples into model inputs (`collate`) for long-context continued
pre-training of Qwen2.5-VL with PyTorch Lightning."""
