"""Atomic writes: a real ``kill -9`` mid-write leaves nothing a later run does not clean; modes follow the umask."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sas3d.utils import atomic
from sas3d.utils.atomic import atomic_path, save_safetensors_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _kill_9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _later_run_writes(path: Path) -> None:
    """A new process writes one artefact into the same folder, as the next run of a command would."""
    code = ("import sys, torch; from sas3d.utils.atomic import save_safetensors_atomic; "
            "save_safetensors_atomic(sys.argv[1], {'x': torch.ones(3)}, {'run': 2})")
    proc = _python(code, str(path))
    assert proc.wait(120) == 0


def test_kill_9_inside_an_atomic_write_leaves_an_orphan_the_next_run_removes(tmp_path):
    out = tmp_path / "x.safetensors"
    code = ("import sys, time; from sas3d.utils.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    with open(tmp, 'wb') as f:\n"
            "        f.write(b'half written' * 100000); f.flush()\n"
            "        print('writing', flush=True); time.sleep(300)\n")
    proc = _python(code, str(out))
    assert proc.stdout.readline().strip() == "writing"
    _kill_9(proc)
    orphans = [p.name for p in tmp_path.iterdir()]
    assert not out.exists() and len(orphans) == 1 and orphans[0].startswith(".x.safetensors."), orphans
    _later_run_writes(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]  # the orphan is gone


def test_kill_9_during_a_real_safetensors_save(tmp_path):
    """The real writer in a loop, killed the moment a hidden temporary exists (safetensors' own
    ``save_file`` used to leave a ``.tmpXXXXXX`` behind, besides ours)."""
    out = tmp_path / "big.safetensors"
    code = ("import sys, torch; from sas3d.utils.atomic import save_safetensors_atomic\n"
            "t = {'w': torch.randn(6_000_000)}\n"
            "print('ready', flush=True)\n"
            "while True: save_safetensors_atomic(sys.argv[1], t, {'run': 1})\n")
    proc = _python(code, str(out))
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while not any(p.name.startswith(".") for p in tmp_path.iterdir()):
        assert time.time() < deadline, "no temporary ever appeared"
        time.sleep(0.001)
    _kill_9(proc)
    assert any(p.name.startswith(".") for p in tmp_path.iterdir())  # killed mid-write: an orphan exists now
    _later_run_writes(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]
    from sas3d.utils.atomic import load_safetensors

    assert load_safetensors(out)[1] == {"run": 2}


def test_a_live_writers_temporary_is_kept_and_foreign_ones_wait(tmp_path):
    from sas3d.utils.atomic import clean_stale_temporaries

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = atomic._host_tag()
        live = tmp_path / f".a.ply.{host}-{sleeper.pid}-0abc{atomic.TEMP_SUFFIX}"
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout.strip()
        dead = tmp_path / f".b.ply.{host}-{dead_pid}-0abc{atomic.TEMP_SUFFIX}"
        foreign_new = tmp_path / f".c.ply.0000beef-{dead_pid}-0abc{atomic.TEMP_SUFFIX}"
        foreign_old = tmp_path / f".d.ply.0000beef-{dead_pid}-0abc{atomic.TEMP_SUFFIX}"
        legacy_old = tmp_path / ".e.ply.ab12cd_9.tmp"  # sas3d's former mkstemp pattern
        unrelated = tmp_path / ".bashrc"
        for p in (live, dead, foreign_new, foreign_old, legacy_old, unrelated):
            p.write_bytes(b"x")
        old = time.time() - 2 * atomic.FOREIGN_STALE_S
        os.utime(foreign_old, (old, old))
        os.utime(legacy_old, (old, old))
        removed = {p.name for p in clean_stale_temporaries(tmp_path)}
        assert removed == {dead.name, foreign_old.name, legacy_old.name}
        assert live.exists() and foreign_new.exists() and unrelated.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_artefacts_follow_the_umask(tmp_path, umask):
    from sas3d.evaluate.plots import plot_per_class
    from sas3d.scene.ply import write_ply

    old = os.umask(umask)
    try:
        write_ply(tmp_path / "a.ply", np.zeros((3, 3)))
        save_safetensors_atomic(tmp_path / "b.safetensors", {"x": torch.zeros(2)})
        write_json_atomic(tmp_path / "c.json", {"k": 1})
        plot_per_class(tmp_path / "d.png", ["a", "b"], [0.5, 0.2], [0.6, 0.3], [True, True], "t")
        with atomic_path(tmp_path / "e.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.arange(3))
    finally:
        os.umask(old)
    for name in ("a.ply", "b.safetensors", "c.json", "d.png", "e.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_folders_built_in_a_temporary_follow_the_umask(tmp_path):
    """The demo rooms are built in a temporary folder renamed into place (mkdtemp made it 0700)."""
    from sas3d.demo.rooms import build_embedded_dataset

    old = os.umask(0o022)
    try:
        build_embedded_dataset(tmp_path / "data", n_train=1, n_val=0, n_views=1, width=32, height=24, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_render_views_output_is_readable_by_the_group(tmp_path):
    """render-views builds its frames in a temporary folder: what it renames into place follows the umask."""
    from sas3d.cli import main
    from sas3d.scene.ply import write_ply

    mesh = tmp_path / "room_vh_clean_2.ply"
    pts = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [4, 4, 0], [0, 0, 2.5], [4, 0, 2.5]], np.float32)
    write_ply(mesh, pts, faces=np.array([[0, 1, 2], [1, 3, 2], [0, 1, 4], [1, 5, 4]]))
    old = os.umask(0o022)
    try:
        assert main(["render-views", str(mesh), "--out", str(tmp_path / "scan"), "--views", "2",
                     "--width", "16", "--height", "12"]) == 0
    finally:
        os.umask(old)
    for sub in ("color", "depth", "pose", "intrinsic"):
        assert stat.S_IMODE((tmp_path / "scan" / sub).stat().st_mode) == 0o755, sub
    assert not [p for p in (tmp_path / "scan").iterdir() if p.name.startswith(".")]


def test_temp_names_carry_host_and_pid(tmp_path):
    from sas3d.utils.atomic import make_temp_dir, temp_name

    name = temp_name("x.ply")
    assert name.startswith(".x.ply.") and f"-{os.getpid()}-" in name and name.endswith(atomic.TEMP_SUFFIX)
    old = os.umask(0o027)
    try:
        folder = make_temp_dir(tmp_path, "rendered")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750 and folder.name.endswith(atomic.TEMP_SUFFIX)
