"""DDP: two Gloo processes on CPU train to identical weights (gradients are all-reduced)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from test_trainer import TINY_MODEL, make_scene


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, scenes: list[str], fused: str, out: str, overrides: list[str],
            text: torch.Tensor, dump: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    import torch.distributed as dist
    from safetensors.torch import save_file

    from sas3d.distill.config import load_train_config
    from sas3d.distill.trainer import train

    cfg = load_train_config("sas", overrides, epochs=2)
    try:
        result = train(cfg, scenes, fused, out, text_features=text)
        state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
        save_file(state, str(Path(dump) / f"rank{rank}.safetensors"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    from safetensors.torch import load_file

    from sas3d.distill.config import load_train_config
    from sas3d.distill.data import load_scene_data

    fused = tmp_path / "fused"
    fused.mkdir()
    text = torch.nn.functional.normalize(torch.randn(20, 32, generator=torch.Generator().manual_seed(1)), dim=1)
    scenes = [make_scene(tmp_path, f"scene{i:04d}_00", 10 + i, text, fused) for i in range(3)]
    overrides = [*TINY_MODEL, "data.voxel_size=0.05", "data.max_voxels=200", "optim.batch_size=2",
                 "schedule.stage1_fraction=0.5", "data.augmentation.elastic=false", f"data.superpoint_cache={tmp_path / 'sp'}"]
    cfg = load_train_config("sas", overrides, epochs=2)
    for s in scenes:  # fill the superpoint cache once, here, instead of in both workers
        load_scene_data(s, fused, cfg.data, tmp_path / "sp")
    out, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    # 3 scenes over 2 ranks: rank 1 pads its share, both run the same number of steps
    mp.spawn(_worker, args=(2, _free_port(), [str(s) for s in scenes], str(fused), str(out), overrides, text, str(dump)),
             nprocs=2, join=True)
    w0, w1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert w0.keys() == w1.keys() and len(w0) > 10
    for k in w0:
        if "running" in k or "num_batches" in k:
            continue  # BatchNorm statistics are per rank (rank 0's are broadcast before each forward)
        assert torch.equal(w0[k], w1[k]), k
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].split(",")[1] == "1" and rows[2].split(",")[1] == "2"
    # each rank kept the TESD history of its own scenes
    snap = sorted(p.name for p in (out / "tesd" / "epoch_0002").iterdir())
    assert snap == [f"scene{i:04d}_00.npy" for i in range(3)]
