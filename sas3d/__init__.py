"""sas3d: open-vocabulary 3D scene segmentation (SAS: Segment Any 3D Scene with Integrated 2D Priors).

Data flows one way: scene -> teacher outputs -> fused point features -> 3D student -> predictions.
"""

__version__ = "0.1.0"


def load_scene(path, **options):
    """Load a scene folder or file, auto-detecting its layout (see :mod:`sas3d.scene.readers`)."""
    from sas3d.scene.readers import load_scene as _load

    return _load(path, **options)


__all__ = ["load_scene", "__version__"]
