"""Pretrained models shipped inside the package (see the model cards beside them)."""
