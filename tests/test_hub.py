"""Model loaders against a fake, unreachable Hugging Face hub (no network): fail at once, with the remedy.

Each case runs in a fresh Python process whose HF_ENDPOINT points at a local server answering
503 to everything (what a broken proxy or an outage looks like) and whose HF_HOME is empty or
holds one tiny cached model. The server counts the requests it gets.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LOADERS = """
import json, sys, time
from sas3d.errors import ConfigError
def attempt(name, fn):
    t = time.time()
    try:
        fn()
        out = None
    except ConfigError as exc:
        out = str(exc)
    print(json.dumps({"loader": name, "seconds": time.time() - t, "error": out}), flush=True)

from sas3d.teachers.dense_clip import DenseCLIPTeacher
from sas3d.teachers.mask_sam import SamClipConfig, SamClipTeacher
from sas3d.teachers.captioner import HFCaptioner
from sas3d.capability.diffusion import StableDiffusionGenerator
from sas3d.capability.sam_refine import SamRefiner
from sas3d.text.encoders import build_text_encoder
# import the model libraries first: only the time to decide about the hub is measured
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel, CLIPTokenizer, SamModel, SamProcessor
from diffusers import StableDiffusionPipeline

attempt("clip-dense", lambda: DenseCLIPTeacher("lab/clip-dense"))
attempt("sam-clip", lambda: SamClipTeacher(None, config=SamClipConfig(sam_model_id="lab/sam", clip_model_id="lab/clip")))
attempt("captioner", lambda: HFCaptioner("lab/captioner"))
attempt("stable-diffusion", lambda: StableDiffusionGenerator.from_pretrained("lab/sd"))
attempt("sam-refiner", lambda: SamRefiner.from_pretrained("lab/sam-refiner"))
attempt("clip-text", lambda: build_text_encoder("clip:lab/clip-text"))
"""

EXPECTED_IDS = {"clip-dense": "lab/clip-dense", "sam-clip": "lab/sam", "captioner": "lab/captioner",
                "stable-diffusion": "lab/sd", "sam-refiner": "lab/sam-refiner", "clip-text": "lab/clip-text"}


class _FakeHub:
    def __init__(self):
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                hub.requests.append(f"{self.command} {self.path}")
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub():
    hub = _FakeHub()
    yield hub
    hub.close()


def _run(code: str, hub: _FakeHub, hf_home: Path, offline: bool = False, timeout: float = 120) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), PYTHONPATH=str(ROOT), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_every_loader_fails_at_once_naming_the_model_and_the_remedy(fake_hub, tmp_path):
    results = _run(LOADERS, fake_hub, tmp_path / "hf")
    assert [r["loader"] for r in results] == list(EXPECTED_IDS)
    for r in results:
        msg = r["error"]
        assert msg is not None, r
        assert f"'{EXPECTED_IDS[r['loader']]}'" in msg and "cannot be reached" in msg and "HTTP 503" in msg, msg
        assert "HF_HUB_OFFLINE=1" in msg and f"hf download {EXPECTED_IDS[r['loader']]}" in msg and "local folder" in msg, msg
        assert r["seconds"] < 5.0, r  # huggingface_hub alone retries five times with back-off (~30 s)
    assert len(fake_hub.requests) == 1, fake_hub.requests  # one reachability probe for the whole process


def test_offline_mode_fails_without_touching_the_network(fake_hub, tmp_path):
    results = _run(LOADERS, fake_hub, tmp_path / "hf", offline=True)
    for r in results:
        assert "HF_HUB_OFFLINE is set" in r["error"] and EXPECTED_IDS[r["loader"]] in r["error"], r
        assert r["seconds"] < 5.0
    assert fake_hub.requests == []


def _cache_tiny_clip(hf_home: Path, repo: str) -> None:
    """Put a tiny random CLIP into the hub cache layout (refs/main -> snapshots/<commit>/), as a download would."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_teachers import tiny_clip

    model, _ = tiny_clip()
    commit = "0" * 40
    base = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    model.save_pretrained(base / "snapshots" / commit)


def test_a_cached_model_loads_at_once_while_the_hub_is_down(fake_hub, tmp_path):
    _cache_tiny_clip(tmp_path / "hf", "lab/tiny-clip")
    code = ("import time; t = time.time()\n"
            "from sas3d.teachers.dense_clip import DenseCLIPTeacher\n"
            "teacher = DenseCLIPTeacher('lab/tiny-clip')\n"
            "import json; print(json.dumps({'dim': teacher.dim, 'seconds': time.time() - t}))\n")
    (result,) = _run(code, fake_hub, tmp_path / "hf", timeout=25)
    assert result["dim"] == 16 and result["seconds"] < 15
    assert len(fake_hub.requests) == 1  # the probe; the model itself comes from the cache


def test_local_folder_and_bad_paths(tmp_path):
    from sas3d.errors import ConfigError
    from sas3d.utils.hub import pretrained_options

    (tmp_path / "model").mkdir()
    assert pretrained_options(str(tmp_path / "model")) == {}
    with pytest.raises(ConfigError, match="no such local folder"):
        pretrained_options(str(tmp_path / "missing" / "model"), "CLIP model")
