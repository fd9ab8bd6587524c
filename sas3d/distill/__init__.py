"""Distillation: losses, recipes (openscene / ggsd / sas) and the training engine."""
