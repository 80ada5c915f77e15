"""Long-context continued pre-training with PyTorch Lightning (MMProLong recipe)."""
