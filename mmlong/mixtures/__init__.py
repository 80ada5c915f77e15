"""Mixtures and packing: draw samples by task proportions and length bins (`mix`), and pack
them into fixed-length training windows (`packing`)."""
