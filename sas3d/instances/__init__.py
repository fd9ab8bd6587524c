"""Open-vocabulary 3D instance segmentation (SAS Sec. 4.4): proposals -> labelled instances.

* :mod:`~sas3d.instances.types` -- :class:`Proposals` (class-agnostic masks) and :class:`Instances`;
* :mod:`~sas3d.instances.readers` -- bring-your-own proposals (ScanNet benchmark text, Mask3D /
  OpenMask3D ``.pt`` / ``.npz`` / ``.npy``; never unpickling code);
* :mod:`~sas3d.instances.builtin` -- training-free proposals: superpoints merged by feature similarity;
* :mod:`~sas3d.instances.features` / :mod:`~sas3d.instances.labelling` -- labelling by the 3D student,
  fused 2D or the ensemble, confidence, free-text instance queries;
* :mod:`~sas3d.instances.scannet_gt` -- ScanNet instance ground truth (segs.json + aggregation.json);
* :mod:`~sas3d.instances.segment` -- one scene end to end; :mod:`~sas3d.instances.export` -- PLY + JSON.

The ScanNet AP protocol lives in :mod:`sas3d.evaluate.instance_ap`.
"""

from sas3d.instances.types import Instances, Proposals

__all__ = ["Instances", "Proposals"]
