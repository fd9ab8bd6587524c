"""MinkUNet18A (MinkowskiEngine's ``MinkUNet18A``, the OpenScene/SAS 3D student) on spconv.

Channel plan as MinkowskiEngine's ``MinkUNetBase`` with PLANES = (32, 64, 128, 256, 128, 128, 96, 96),
INIT_DIM = 32, LAYERS = (2,)*8 and BasicBlocks:

    stem      submanifold conv k5, in -> 32
    encoder   4 x [conv k2 stride 2 (channels kept), 2 BasicBlocks -> 32 | 64 | 128 | 256]
    decoder   4 x [inverse conv k2 stride 2 -> 128 | 128 | 96 | 96, concat skip, 2 BasicBlocks]
    head      1x1 (a Linear on the voxel features) 96 -> out_channels, no bias

Down convs register an ``indice_key`` so each up conv scatters back onto exactly the voxels
of the matching encoder level, keeping the input row order all the way to the output.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from sas3d.models.registry import register
from sas3d.models.spconv_compat import ensure_spconv_cpu_backward, import_spconv

spconv = import_spconv()
ensure_spconv_cpu_backward()

PLANES = (32, 64, 128, 256, 128, 128, 96, 96)  # MinkowskiEngine MinkUNet18A
INIT_DIM = 32  # MinkowskiEngine MinkUNetBase.INIT_DIM
LAYERS = (2, 2, 2, 2, 2, 2, 2, 2)  # MinkUNet18 = BasicBlock x 2 per stage
BN_MOMENTUM = 0.1  # MinkowskiEngine default bn_momentum
SPATIAL_MULTIPLE = 16  # 4 stride-2 levels: every level must tile the grid exactly


def _bn_relu(x: spconv.SparseConvTensor, bn: nn.BatchNorm1d, relu: bool = True) -> spconv.SparseConvTensor:
    f = bn(x.features)
    return x.replace_feature(torch.relu(f) if relu else f)


class BasicBlock(nn.Module):
    """Two 3x3x3 submanifold convs with BN; residual, projected by a 1x1 when channels change."""

    def __init__(self, cin: int, cout: int, indice_key: str):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(cin, cout, 3, bias=False, indice_key=indice_key)
        self.bn1 = nn.BatchNorm1d(cout, momentum=BN_MOMENTUM)
        self.conv2 = spconv.SubMConv3d(cout, cout, 3, bias=False, indice_key=indice_key)
        self.bn2 = nn.BatchNorm1d(cout, momentum=BN_MOMENTUM)
        # a 1x1 sparse conv is a per-voxel linear map
        self.proj = None if cin == cout else nn.Sequential(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout, momentum=BN_MOMENTUM))

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        identity = x.features if self.proj is None else self.proj(x.features)
        out = _bn_relu(self.conv1(x), self.bn1)
        out = _bn_relu(self.conv2(out), self.bn2, relu=False)
        return out.replace_feature(torch.relu(out.features + identity))


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, indice_key: str):
        super().__init__()
        self.blocks = nn.ModuleList(BasicBlock(cin if i == 0 else cout, cout, indice_key) for i in range(blocks))

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        for block in self.blocks:
            x = block(x)
        return x


@register("minkunet18a")
class MinkUNet18A(nn.Module):
    """Sparse U-Net student. ``forward(voxel_features (M,Cin), voxel_coords (M,4) int [b,x,y,z], batch_size)``
    -> (M, out_channels), rows in the input order. Coordinates are any non-negative voxel indices."""

    def __init__(self, in_channels: int = 1, out_channels: int = 384, planes: tuple[int, ...] = PLANES,
                 init_dim: int = INIT_DIM, layers: tuple[int, ...] = LAYERS):
        super().__init__()
        planes, layers = tuple(planes), tuple(layers)
        if len(planes) != 8 or len(layers) != 8:
            raise ValueError("MinkUNet needs 8 stage widths and 8 block counts")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stem = spconv.SubMConv3d(in_channels, init_dim, 5, bias=False, indice_key="stem")
        self.stem_bn = nn.BatchNorm1d(init_dim, momentum=BN_MOMENTUM)

        self.down = nn.ModuleList()
        self.down_bn = nn.ModuleList()
        self.enc = nn.ModuleList()
        skip_dims = [init_dim]
        c = init_dim
        for lvl in range(4):
            self.down.append(spconv.SparseConv3d(c, c, 2, stride=2, bias=False, indice_key=f"down{lvl}"))
            self.down_bn.append(nn.BatchNorm1d(c, momentum=BN_MOMENTUM))
            self.enc.append(_Stage(c, planes[lvl], layers[lvl], f"subm{lvl + 1}"))
            c = planes[lvl]
            skip_dims.append(c)

        self.up = nn.ModuleList()
        self.up_bn = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(4):
            lvl = 3 - i  # decoder goes back up through the encoder levels
            cout = planes[4 + i]
            self.up.append(spconv.SparseInverseConv3d(c, cout, 2, indice_key=f"down{lvl}", bias=False))
            self.up_bn.append(nn.BatchNorm1d(cout, momentum=BN_MOMENTUM))
            self.dec.append(_Stage(cout + skip_dims[lvl], cout, layers[4 + i], f"subm{lvl}" if lvl else "subm0"))
            c = cout
        self.head = nn.Linear(c, out_channels, bias=False)  # no bias, as OpenScene's MinkUNet18A final 1x1 conv

    @staticmethod
    def spatial_shape(voxel_coords: torch.Tensor) -> list[int]:
        """Grid size covering the coords, rounded up to a multiple of 16."""
        if voxel_coords.shape[0] == 0:
            return [SPATIAL_MULTIPLE] * 3
        top = voxel_coords[:, 1:].max(dim=0).values.tolist()
        return [max(SPATIAL_MULTIPLE, -(-(int(t) + 1) // SPATIAL_MULTIPLE) * SPATIAL_MULTIPLE) for t in top]

    def forward(self, voxel_features: torch.Tensor, voxel_coords: torch.Tensor, batch_size: int,
                rows: torch.Tensor | None = None, full: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """(M, out_channels) outputs; with ``rows`` (R,) the pair ``(outputs[rows], outputs.detach())``,
        or ``(outputs[rows], None)`` when ``full`` is False.

        The head is a per-voxel linear map, so the rows a training loss uses are computed with grad
        and the rest only without it: the (M, out_channels) autograd graph (and its zero-filled
        gradient buffers) shrinks to (R, out_channels). The trainer uses this, asking for the full
        output only on the steps that read it (TESD's), since the head on every voxel is an (M, planes) x
        (planes, out_channels) product; the values are those of the plain call."""
        if voxel_features.ndim != 2 or voxel_features.shape[1] != self.in_channels:
            raise ValueError(f"expected features (M,{self.in_channels}), got {tuple(voxel_features.shape)}")
        if voxel_coords.ndim != 2 or voxel_coords.shape != (voxel_features.shape[0], 4):
            raise ValueError(f"expected coords (M,4) matching features, got {tuple(voxel_coords.shape)}")
        coords = voxel_coords.to(device=voxel_features.device, dtype=torch.int32).contiguous()
        if coords.shape[0] and int(coords.min()) < 0:
            raise ValueError("voxel coordinates must be non-negative")
        features = self._forward(voxel_features.float(), coords, int(batch_size))
        if rows is None:
            return self.head(features)
        everything = None
        if full:
            with torch.no_grad():
                everything = self.head(features)
        return self.head(features.index_select(0, rows)), everything

    def _forward(self, voxel_features: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        x = spconv.SparseConvTensor(voxel_features, coords, self.spatial_shape(coords), batch_size)
        # the stem's submanifold conv shares the finest-level neighbour table with the last decoder stage
        x = _bn_relu(self.stem(x), self.stem_bn)
        skips = [x]
        for down, bn, stage in zip(self.down, self.down_bn, self.enc):
            x = stage(_bn_relu(down(x), bn))
            skips.append(x)
        for i, (up, bn, stage) in enumerate(zip(self.up, self.up_bn, self.dec)):
            x = _bn_relu(up(x), bn)
            skip = skips[3 - i]
            x = stage(x.replace_feature(torch.cat([x.features, skip.features], dim=1)))
        return x.features
