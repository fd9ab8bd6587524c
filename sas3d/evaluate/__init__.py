"""Evaluation: metrics, label sets, 2D/3D/ensemble modes, interop with reference releases."""
