"""Web viewer: query/colour logic without a browser, and end to end in headless Chromium (CDP)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import torch

from sas3d.fusion.features import PointFeatures
from sas3d.query.viewer import SceneViewer, colorize_scores, load_viewer_data
from sas3d.scene.ply import write_ply
from sas3d.text.encoders import build_text_encoder
from sas3d.text.labelsets import get_label_set

N = 800  # points per object


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    """Three point blobs (chair, table, floor) with hand-made fused features = their class prompt embeddings."""
    root = tmp_path_factory.mktemp("viewer")
    rng = np.random.default_rng(0)
    chair = rng.uniform([0, 0, 0], [1, 1, 1], (N, 3))
    table = rng.uniform([2, 0, 0], [3, 1, 0.8], (N, 3))
    floor = np.c_[rng.uniform(-0.5, 3.5, (N, 2)), np.zeros(N)]
    pts = np.concatenate([chair, table, floor]).astype(np.float32)
    cols = np.repeat(np.array([[200, 50, 50], [50, 200, 50], [120, 120, 120]], np.uint8), N, axis=0)
    write_ply(root / "scene.ply", pts, cols)
    enc = build_text_encoder("minilm")
    labels = get_label_set("scannet20")
    text = enc.encode([labels.prompts()[labels.index(c)] for c in ("chair", "table", "floor")])
    feats = text.repeat_interleave(N, dim=0).half()
    seen = torch.ones(3 * N, dtype=torch.bool)
    seen[-10:] = False  # a few unseen points must stay grey
    PointFeatures(feats, seen, {"note": "hand-made test features"}).save(root / "fused.safetensors")
    return root


def test_set_query_ranks_matching_object_highest(tiny_scene):
    data = load_viewer_data(tiny_scene / "scene.ply", tiny_scene / "fused.safetensors", superpoints=False)
    viewer = SceneViewer(data)
    assert viewer.available_modes() == ["rgb", "prediction", "query"]
    rgb = viewer.colors.copy()
    sim = viewer.set_query("chair")
    assert sim[:N].min() > sim[N:2 * N].max()  # every chair point beats every table point
    assert viewer.mode == "query" and not np.array_equal(viewer.colors, rgb)
    assert (viewer.colors[-10:] == np.array([90, 90, 90])).all()  # unseen -> grey
    sim_t = viewer.set_query("table")
    assert sim_t[N:2 * N].min() > sim_t[:N].max()


def test_prediction_mode_recovers_classes(tiny_scene):
    data = load_viewer_data(tiny_scene / "scene.ply", tiny_scene / "fused.safetensors", superpoints=False)
    viewer = SceneViewer(data)
    pred = viewer.predictions()
    labels = get_label_set("scannet20")
    assert (pred[:N] == labels.index("chair")).all()
    assert (pred[N:2 * N] == labels.index("table")).all()
    assert (pred[-10:] == 255).all()
    cols = viewer.set_mode("prediction")
    assert len({tuple(c) for c in cols[: 2 * N]}) == 2
    with pytest.raises(ValueError):
        viewer.set_mode("ground truth")  # the PLY scene has no labels


def test_query_without_features_is_a_clear_error(tiny_scene):
    from sas3d.errors import InputError

    viewer = SceneViewer(load_viewer_data(tiny_scene / "scene.ply", None, superpoints=False))
    assert viewer.available_modes() == ["rgb"]
    with pytest.raises(InputError, match="--checkpoint or --fused"):
        viewer.set_query("chair")


def test_max_points_subsamples_consistently(tiny_scene):
    data = load_viewer_data(tiny_scene / "scene.ply", tiny_scene / "fused.safetensors", max_points=500, superpoints=False)
    assert len(data.points) == 500 and data.features.shape[0] == 500 and data.seen.shape == (500,)
    # Features stay attached to their points: red (chair) points carry the chair embedding.
    enc = build_text_encoder("minilm")
    chair = enc.encode(["a chair in a scene"])[0]
    red = data.rgb[:, 0] == 200
    assert torch.allclose(data.features[torch.from_numpy(red)].float() @ chair, torch.ones(int(red.sum())), atol=1e-2)


def test_colorize_scores_is_monotonic():
    cols = colorize_scores(np.array([0.0, 0.5, 1.0]), cmap="gray")
    assert cols[0, 0] < cols[1, 0] < cols[2, 0]


# ------------------------------------------------------------------ headless Chromium end to end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cdp:
    """Minimal Chrome DevTools Protocol client over the page's websocket."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _wait(cond, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_viewer_in_headless_chromium(tiny_scene, tmp_path):
    data = load_viewer_data(tiny_scene / "scene.ply", tiny_scene / "fused.safetensors", superpoints=False)
    viewer = SceneViewer(data, point_size=0.05)
    viewer.start(port=_free_port())
    debug_port = _free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # software WebGL for the 3D canvas
         f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,700",
         f"--remote-debugging-port={debug_port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def page_target():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=2) as r:
                    return next((t for t in json.load(r) if t["type"] == "page"), None)
            except OSError:
                return None

        cdp = _Cdp(_wait(page_target, 20, "chromium DevTools")["webSocketDebuggerUrl"])
        cdp.call("Page.navigate", url=f"http://127.0.0.1:{viewer.port}")
        # The text box of the GUI row labelled "query": climb from the label to the row holding an input.
        find_query = ("(() => { let e = [...document.querySelectorAll('label')].find(l => l.textContent.trim() === 'query');"
                      " while (e && !e.querySelector('input')) e = e.parentElement; return e && e.querySelector('input'); })()")
        _wait(lambda: cdp.eval(f"!!{find_query} && !!document.querySelector('canvas')"), 30, "viewer GUI")
        _wait(lambda: viewer.server.get_clients(), 10, "websocket client")
        time.sleep(2.0)  # let the point cloud arrive and render
        before = cdp.screenshot()

        # Type the query like a user (focus + insertText), then click "search".
        cdp.eval(f"{find_query}.focus()")
        cdp.call("Input.insertText", text="chair")
        _wait(lambda: viewer._handles["query"].value == "chair", 10, "the typed text to reach the server")
        cdp.eval("[...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'search').click()")
        _wait(lambda: viewer.query == "chair", 15, "the query to reach the server")
        time.sleep(2.0)
        after = cdp.screenshot()

        assert viewer.mode == "query"
        assert viewer.similarity[:N].min() > viewer.similarity[N:2 * N].max()
        # The canvas was recoloured: many pixels changed noticeably between the screenshots.
        changed = (np.abs(after - before).sum(axis=2) > 60).mean()
        assert changed > 0.005, f"only {changed:.4f} of the pixels changed after the query"
        status = cdp.eval("document.body.innerText")
        assert 'query "chair"' in status
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        viewer.stop()


# ------------------------------------------------------------------ websocket origins (real clients)


def _ws_session(port: int, origin: str | None, seconds: float = 3.0) -> tuple[int, int | None]:
    """Connect like viser's page does (its subprotocol), read for a while; -> (bytes received, close code)."""
    import viser
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    received, code = 0, None
    kwargs = {"origin": origin} if origin is not None else {}
    with connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None,
                 open_timeout=10, **kwargs) as ws:
        end = time.time() + seconds
        try:
            while time.time() < end:
                try:
                    msg = ws.recv(timeout=max(0.05, end - time.time()))
                except TimeoutError:
                    break
                received += len(msg)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
    return received, code


def test_viewer_refuses_websockets_from_other_origins(tiny_scene):
    data = load_viewer_data(tiny_scene / "scene.ply", tiny_scene / "fused.safetensors", superpoints=False)
    viewer = SceneViewer(data)
    viewer.start(port=_free_port())
    try:
        port = viewer.port
        scene_bytes = data.points.nbytes
        got, code = _ws_session(port, "http://evil.example")
        assert code == 1008 and got == 0, (got, code)  # closed before a single message
        got, code = _ws_session(port, f"http://evil.example:{port}")  # DNS rebinding: right port, foreign name
        assert code == 1008 and got == 0
        got, code = _ws_session(port, f"http://127.0.0.1:{port + 1}")  # another local page (other port)
        assert code == 1008 and got == 0
        for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", None):  # its own page; a local script
            got, code = _ws_session(port, own)
            assert code is None and got > scene_bytes, (own, got)  # the point cloud arrived
    finally:
        viewer.stop()


def test_origin_rules():
    from sas3d.query.viewer import origin_allowed

    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", 8080)
    assert origin_allowed("http://[::1]:8080", "[::1]:8080", 8080)
    assert not origin_allowed("https://evil.example", "127.0.0.1:8080", 8080)
    assert not origin_allowed("http://evil.example:8080", "evil.example:8080", 8080)  # rebinding
    assert origin_allowed("http://192.168.1.5:8080", "192.168.1.5:8080", 8080)  # --host 0.0.0.0, reached by IP
    assert not origin_allowed("http://192.168.1.6:8080", "192.168.1.5:8080", 8080)
    assert origin_allowed("http://proxy.lab:9000", "127.0.0.1:8080", 8080, extra=["http://proxy.lab:9000/"])
    assert not origin_allowed("null", "127.0.0.1:8080", 8080)  # sandboxed iframes, file:// pages
