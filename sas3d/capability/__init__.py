"""Annotation-free model capability (SAS 3.2): generated images + pseudo masks -> per-class IoU per teacher."""
