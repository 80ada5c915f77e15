"""Text-to-image rendering for visual-text compression (Glyph-style page images)."""
