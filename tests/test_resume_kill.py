"""A real `kill -9` in the middle of TESD: the resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from test_trainer import TINY_MODEL, make_scene

ROOT = Path(__file__).resolve().parents[1]


def _train_cmd(scenes, fused, out, resume=False):
    cmd = [sys.executable, "-m", "sas3d", "train", "--recipe", "sas", "--scenes", ",".join(map(str, scenes)), "--fused", str(fused),
           "--out", str(out), "--epochs", "6", "--set", "schedule.stage1_fraction=0.5", "--set", "data.voxel_size=0.05",
           "--set", "data.max_voxels=300", "--set", "optim.batch_size=1", "--set", "optim.lr=0.01", "--set", "text.encoder=minilm"]
    for o in TINY_MODEL:
        cmd += ["--set", o]
    return cmd + (["--resume"] if resume else [])


def test_kill_9_during_tesd_then_resume_equals_the_uninterrupted_run(tmp_path):
    from sas3d.text.encoders import build_text_encoder
    from sas3d.text.labelsets import get_label_set
    from sas3d.utils.atomic import load_safetensors

    text = build_text_encoder("minilm").encode(get_label_set("scannet20").prompts())
    fused = tmp_path / "fused"
    fused.mkdir()
    scenes = [make_scene(tmp_path, f"scene{i:04d}_07", 40 + i, text, fused) for i in range(2)]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(scenes, fused, straight), env=env, check=True, capture_output=True, cwd=ROOT)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(scenes, fused, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    # kill once stage 2 has checkpointed (epoch 4) and written history past that checkpoint (update 2)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpt = killed / "checkpoints" / "epoch_0004.safetensors"
        if ckpt.is_file() and any(killed.glob("tesd/*.2.npy")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "epoch_0006.safetensors").exists()
    subprocess.run(_train_cmd(scenes, fused, killed, resume=True), env=env, check=True, capture_output=True, cwd=ROOT)

    a, _ = load_safetensors(straight / "last.safetensors")
    b, meta = load_safetensors(killed / "last.safetensors")
    assert meta["epoch"] == 6 and a.keys() == b.keys()
    for k in a:
        if k.startswith(("model.", "optim.")):
            assert torch.equal(a[k], b[k]), k
    # the histories on disk agree too, and only the checkpointed versions are left
    for s in scenes:
        assert np.array_equal(np.load(straight / "tesd" / f"{s.name}.3.npy"), np.load(killed / "tesd" / f"{s.name}.3.npy"))
    assert sorted(p.name for p in (killed / "tesd").iterdir()) == sorted(f"{s.name}.3.npy" for s in scenes)
