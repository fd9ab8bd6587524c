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


def _run(code: str, hub: _FakeHub, hf_home: Path, offline: bool = False, timeout: float = 120) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), PYTHONPATH=str(ROOT), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


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


CACHED_AND_OFFLINE = """
t = time.time()
teacher = DenseCLIPTeacher("lab/tiny-clip")  # in the cache: loads although the hub is down
print(json.dumps({"loader": "cached", "seconds": time.time() - t, "dim": teacher.dim}), flush=True)
import huggingface_hub.constants
huggingface_hub.constants.HF_HUB_OFFLINE = True  # what HF_HUB_OFFLINE=1 in the environment sets
print(json.dumps({"loader": "offline"}), flush=True)
""" + LOADERS.split("StableDiffusionPipeline\n", 1)[1]


@pytest.fixture(scope="module")
def hub_session(tmp_path_factory):
    """One process (the model libraries import slowly): uncached loaders, a cached model, then offline mode."""
    hub = _FakeHub()
    hf_home = tmp_path_factory.mktemp("hf")
    _cache_tiny_clip(hf_home, "lab/tiny-clip")
    try:
        results = _run(LOADERS + CACHED_AND_OFFLINE, hub, hf_home)
    finally:
        hub.close()
    cut = next(i for i, r in enumerate(results) if r["loader"] == "offline")
    return results[:cut], results[cut + 1:], hub.requests


def test_every_loader_fails_at_once_naming_the_model_and_the_remedy(hub_session):
    results = [r for r in hub_session[0] if r["loader"] != "cached"]
    assert [r["loader"] for r in results] == list(EXPECTED_IDS)
    for r in results:
        msg = r["error"]
        assert msg is not None, r
        assert f"'{EXPECTED_IDS[r['loader']]}'" in msg and "cannot be reached" in msg and "HTTP 503" in msg, msg
        assert "HF_HUB_OFFLINE=1" in msg and f"hf download {EXPECTED_IDS[r['loader']]}" in msg and "local folder" in msg, msg
        assert r["seconds"] < 5.0, r  # huggingface_hub alone retries five times with back-off (~30 s)
    assert len(hub_session[2]) == 1, hub_session[2]  # one reachability probe for the whole process, nothing else


def test_a_cached_model_loads_at_once_while_the_hub_is_down(hub_session):
    (cached,) = [r for r in hub_session[0] if r["loader"] == "cached"]
    assert cached["dim"] == 16 and cached["seconds"] < 10, cached  # from the cache, no request (see the count above)


def test_offline_mode_fails_without_touching_the_network(hub_session):
    assert [r["loader"] for r in hub_session[1]] == list(EXPECTED_IDS)
    for r in hub_session[1]:
        assert "HF_HUB_OFFLINE is set" in r["error"] and EXPECTED_IDS[r["loader"]] in r["error"], r
        assert r["seconds"] < 5.0
    assert len(hub_session[2]) == 1  # offline mode added no request


def test_offline_environment_variable(tmp_path):
    """HF_HUB_OFFLINE=1 set before the process starts (huggingface_hub reads it at import): no network at all."""
    hub = _FakeHub()
    try:
        code = ("import json\nfrom sas3d.errors import ConfigError\nfrom sas3d.utils.hub import pretrained_options\n"
                "try:\n    pretrained_options('lab/clip', 'CLIP model')\nexcept ConfigError as exc:\n"
                "    print(json.dumps({'error': str(exc)}))\n")
        (result,) = _run(code, hub, tmp_path / "hf", offline=True)
    finally:
        hub.close()
    assert "HF_HUB_OFFLINE is set" in result["error"] and hub.requests == []


def test_local_folder_and_bad_paths(tmp_path):
    from sas3d.errors import ConfigError
    from sas3d.utils.hub import pretrained_options

    (tmp_path / "model").mkdir()
    assert pretrained_options(str(tmp_path / "model")) == {}
    with pytest.raises(ConfigError, match="no such local folder"):
        pretrained_options(str(tmp_path / "missing" / "model"), "CLIP model")
