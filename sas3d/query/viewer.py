"""Local web viewer (viser): a scene's points coloured by RGB, ground truth, prediction,
superpoints, instances, or similarity to a typed text query (with instances: the instances it ranks first).

:class:`SceneViewer` holds all state and logic; the viser server is only its front end, so
``set_query("chair")`` / ``set_mode("prediction")`` work (and are tested) without a browser.
The server binds to 127.0.0.1 by default: it is meant for the user's own machine.

Websocket origins: any web page a user visits could open ``ws://127.0.0.1:8080`` and read the
scan, because browsers let pages connect websockets anywhere. The viewer therefore accepts a
websocket only from its own page (:func:`origin_allowed`: the Origin header names this port on a
loopback address, or the host the browser used when that is an IP address or this machine's name,
or an origin given with ``allowed_origins``) and closes every other one (code 1008) before any scene
data is sent. Clients that send no Origin are not browsers (a local script) and are let in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import numpy as np

from sas3d.scene.types import IGNORE_LABEL

log = logging.getLogger(__name__)

MODES = ("rgb", "ground truth", "prediction", "superpoints", "instances", "query")
TOP_INSTANCE_COLORS = np.array([[230, 30, 30], [255, 150, 0], [250, 230, 40], [60, 200, 80], [60, 140, 255]], np.uint8)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
POLICY_VIOLATION = 1008  # websocket close code
UNSEEN_GREY = (90, 90, 90)  # points without features / labels
POINT_SIZE = 0.02  # metres; about the ScanNet vertex spacing


@dataclass
class ViewerData:
    """What the viewer shows; all per-point arrays share the (sub-sampled) point order."""

    name: str
    points: np.ndarray  # (N, 3) float32
    rgb: np.ndarray  # (N, 3) uint8
    labels: np.ndarray | None = None  # (N,) int64 in ``label_set`` indices, 255 ignore
    label_set: str = "scannet20"
    superpoints: np.ndarray | None = None  # (N,) int64
    features: Any = None  # (N, C) torch tensor (any float dtype) or None
    seen: np.ndarray | None = None  # (N,) bool: points that have features
    feature_source: str | None = None
    # Gaussian splats (sas3d.gaussians.display.viewer_data): {"covariances": (N, 3, 3), "opacities": (N, 1)}
    # float32; when set, the points are drawn as splats instead of a point cloud.
    splats: dict[str, np.ndarray] | None = None
    point_index: np.ndarray | None = None  # (N,) index of each shown point in the scene (None: all, in order)
    instances: Any = None  # sas3d.instances.types.Instances over the whole scene, or None


def load_viewer_data(scene_path: str | Path, features: str | Path | None = None, max_points: int = 200_000,
                     seed: int = 0, superpoints: bool = True, skip_invalid_poses: bool = False) -> ViewerData:
    """Load a scene (any layout) and optionally per-point features from a checkpoint or fused file
    (``sas3d.query.similarity.load_point_features``), keeping at most ``max_points`` random points."""
    import torch

    from sas3d.query.similarity import load_point_features
    from sas3d.scene.readers import load_scene

    scene = load_scene(scene_path, skip_invalid_poses=skip_invalid_poses)
    pf = load_point_features(features, scene) if features is not None else None
    sp = scene.superpoints
    if sp is None and superpoints:
        from sas3d.geometry.superpoints import scene_superpoints

        sp = scene_superpoints(scene)
    keep = np.arange(scene.num_points)
    if scene.num_points > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(scene.num_points, max_points, replace=False))
    rgb = scene.colors if scene.colors is not None else np.full((scene.num_points, 3), 180, np.uint8)
    idx = torch.from_numpy(keep)
    return ViewerData(
        name=scene.name, points=np.asarray(scene.points, np.float32)[keep], rgb=np.asarray(rgb, np.uint8)[keep],
        labels=None if scene.labels is None else scene.labels[keep], label_set=scene.label_set or "scannet20",
        superpoints=None if sp is None else np.asarray(sp)[keep],
        features=None if pf is None else pf.features[idx], seen=None if pf is None else pf.seen[idx].numpy(),
        feature_source=None if features is None else str(features), point_index=keep,
    )


def _split_host(netloc: str) -> tuple[str, int | None]:
    parts = urlsplit("//" + netloc)
    try:
        return (parts.hostname or "").lower(), parts.port
    except ValueError:  # a malformed port
        return (parts.hostname or "").lower(), -1


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str | None, host_header: str | None, port: int, extra: Iterable[str] = ()) -> bool:
    """Whether a websocket handshake with this ``Origin`` / ``Host`` may see the scene (see the module docstring).

    A DNS name other than this machine's is refused even when it matches the Host header: an
    attacker's name that resolves to 127.0.0.1 (DNS rebinding) would otherwise look same-origin.
    """
    if origin is None:
        return True
    if origin.rstrip("/") in {o.rstrip("/") for o in extra}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https"):
        return False
    try:
        name, oport = (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if oport != port:
        return False
    if name in LOOPBACK_NAMES or (_is_ip(name) and ipaddress.ip_address(name).is_loopback):
        return True
    host, hport = _split_host(host_header or "")
    same_origin = name == host and (hport or 80) == oport
    own_names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    return same_origin and (_is_ip(name) or name in own_names)


def label_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 distinct class colours (matplotlib tab20, then hsv)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if n <= 20 else colormaps["hsv"]
    return (np.asarray([cmap(i / max(1, n - 1) if n > 20 else i)[:3] for i in range(n)]) * 255).astype(np.uint8)


def colorize_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, 3) uint8: class colour per label, grey for ignore/out-of-range."""
    pal = np.vstack([label_palette(n_classes), np.asarray([UNSEEN_GREY], np.uint8)])
    lab = np.asarray(labels, dtype=np.int64)
    return pal[np.where((lab >= 0) & (lab < n_classes), lab, n_classes)]


def colorize_ids(ids: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 pseudo-random colour per segment id (stable for a given id)."""
    h = (np.asarray(ids, dtype=np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFF)
    return np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (16, 8, 0)], axis=1).astype(np.uint8) // 2 + 64


def colorize_scores(scores: np.ndarray, valid: np.ndarray | None = None, cmap: str = "viridis") -> np.ndarray:
    """(N, 3) uint8 heat-map of ``scores`` min-max normalised over ``valid`` points; grey elsewhere."""
    from matplotlib import colormaps

    s = np.asarray(scores, dtype=np.float64)
    valid = np.ones(len(s), bool) if valid is None else np.asarray(valid, bool)
    out = np.empty((len(s), 3), np.uint8)
    out[:] = UNSEEN_GREY
    if valid.any():
        lo, hi = s[valid].min(), s[valid].max()
        t = (s[valid] - lo) / max(hi - lo, 1e-8)
        out[valid] = (colormaps[cmap](t)[:, :3] * 255).astype(np.uint8)
    return out


class SceneViewer:
    """Viewer state (colour mode, query) and, after :meth:`start`, a viser server showing it."""

    def __init__(self, data: ViewerData, text_encoder: Any = None, point_size: float = POINT_SIZE):
        self.data = data
        self._encoder = text_encoder
        self.point_size = point_size
        self.mode = "rgb"
        self.query: str | None = None
        self.query_warning: str | None = None  # set when the query was longer than the text encoder reads
        self.similarity: np.ndarray | None = None
        self.ranked: list = []  # instances the last highlighted query ranked first
        self.colors = data.rgb.copy()
        self.server = None
        self._handles: dict[str, Any] = {}
        self._lock = threading.RLock()  # GUI callbacks run on viser's threads (and may re-enter via _push)

    # ---------------------------------------------------------------- state (no browser needed)

    @property
    def text_encoder(self):
        if self._encoder is None:
            from sas3d.text.encoders import build_text_encoder

            self._encoder = build_text_encoder("minilm")
        return self._encoder

    def available_modes(self) -> list[str]:
        modes = ["rgb"]
        if self.data.labels is not None:
            modes.append("ground truth")
        if self.data.features is not None:
            modes.append("prediction")
        if self.data.superpoints is not None:
            modes.append("superpoints")
        if self.data.instances is not None:
            modes.append("instances")
        if self.data.features is not None:
            modes.append("query")
        return modes

    def instance_ids(self) -> np.ndarray:
        """(N,) instance index per shown point (-1 = none; overlaps show the higher-scored instance)."""
        ids = self.data.instances.point_ids()
        return ids if self.data.point_index is None else ids[self.data.point_index]

    def _seen(self) -> np.ndarray:
        return np.ones(len(self.data.points), bool) if self.data.seen is None else self.data.seen

    def predictions(self) -> np.ndarray:
        """(N,) label-set index of the most similar class prompt per point (255 where unseen)."""
        from sas3d.text.labelsets import get_label_set

        labels = get_label_set(self.data.label_set)
        text = self.text_encoder.encode(labels.prompts()).float()
        feats = self.data.features.float()
        feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-8)
        pred = (feats @ text.T).argmax(dim=1).numpy().astype(np.int64)
        pred[~self._seen()] = IGNORE_LABEL
        return pred

    def colors_for(self, mode: str) -> np.ndarray:
        """(N, 3) uint8 point colours for a colour mode."""
        from sas3d.text.labelsets import get_label_set

        d = self.data
        if mode == "rgb":
            return d.rgb
        if mode == "ground truth" and d.labels is not None:
            return colorize_labels(d.labels, len(get_label_set(d.label_set)))
        if mode == "prediction" and d.features is not None:
            return colorize_labels(self.predictions(), len(get_label_set(d.label_set)))
        if mode == "superpoints" and d.superpoints is not None:
            return colorize_ids(d.superpoints)
        if mode == "instances" and d.instances is not None:
            ids = self.instance_ids()
            return np.where((ids >= 0)[:, None], colorize_ids(ids + 1), np.asarray(UNSEEN_GREY, np.uint8)).astype(np.uint8)
        if mode == "query" and self.similarity is not None:
            return colorize_scores(self.similarity, self._seen())
        raise ValueError(f"colour mode {mode!r} is not available for this scene (available: {', '.join(self.available_modes())})")

    def set_mode(self, mode: str) -> np.ndarray:
        """Switch the colour mode; returns the new colours (and pushes them to the browser)."""
        with self._lock:
            self.colors = self.colors_for(mode)
            self.mode, self.ranked = mode, []
            self._push()
            return self.colors

    def set_query(self, text: str) -> np.ndarray:
        """Colour points by cosine similarity to the text query; returns the (N,) similarities."""
        from sas3d.errors import InputError
        from sas3d.query.similarity import query_prompt, text_similarity, truncation_warning

        if self.data.features is None:
            raise InputError(None, "no per-point features loaded: start the viewer with --checkpoint or --fused to query")
        prompt = query_prompt(text)
        warning = truncation_warning(self.text_encoder, prompt)
        if warning:
            log.warning("viewer: %s", warning)
        emb = self.text_encoder.encode([prompt])[0]
        sim = text_similarity(self.data.features, emb).numpy()
        with self._lock:
            self.query, self.similarity, self.query_warning = text, sim, warning
            self.colors = colorize_scores(sim, self._seen())
            self.mode = "query"
            self._push()
        return sim

    def highlight_instances(self, text: str, top_k: int = 3) -> list:
        """Colour the ``top_k`` instances a text query ranks first (red, orange, yellow, ...) over a dimmed
        scene; returns the ranked :class:`sas3d.instances.labelling.RankedInstance` list."""
        from sas3d.errors import InputError
        from sas3d.instances.labelling import rank_instances
        from sas3d.query.similarity import query_prompt

        if self.data.instances is None or self.data.instances.features is None:
            raise InputError(None, "no labelled instances loaded: open the viewer from `sas3d instances --view`")
        ranked = rank_instances(self.data.instances, self.text_encoder.encode([query_prompt(text)])[0], top_k=top_k)
        ids = self.instance_ids()
        colors = (self.data.rgb.astype(np.float32) * 0.3 + 60).astype(np.uint8)
        for k, r in reversed(list(enumerate(ranked))):  # the best is painted last
            colors[ids == r.index] = TOP_INSTANCE_COLORS[min(k, len(TOP_INSTANCE_COLORS) - 1)]
        with self._lock:
            self.query, self.colors, self.mode, self.ranked = text, colors, "instances", ranked
            self._push()
        return ranked

    # ---------------------------------------------------------------- web front end

    def _push(self) -> None:
        h = self._handles
        if "cloud" in h:
            h["cloud"].colors = self.colors
        if "splats" in h:
            h["splats"].rgbs = self.colors
        if "mode" in h and h["mode"].value != self.mode:
            h["mode"].value = self.mode
        if "status" in h:
            h["status"].content = self._status()

    def _status(self) -> str:
        d = self.data
        lines = [f"**{d.name}**: {len(d.points):,} {'Gaussians' if d.splats is not None else 'points'}", f"colour: {self.mode}"]
        if self.mode == "query" and self.similarity is not None and self._seen().any():
            seen = self._seen()
            lines.append(f"query \"{self.query}\": similarity {self.similarity[seen].min():.3f} .. {self.similarity[seen].max():.3f}")
            if self.query_warning:
                lines.append(f"warning: {self.query_warning}")
        if self.mode == "instances" and self.ranked:
            lines.append(f"query \"{self.query}\": " + ", ".join(f"{r.class_name} ({r.similarity:.2f})" for r in self.ranked))
        if d.feature_source is None:
            lines.append("no features loaded (use --checkpoint or --fused to query)")
        else:
            lines.append(f"features: {Path(d.feature_source).name}")
        return "  \n".join(lines)

    def start(self, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False, allowed_origins: Iterable[str] = ()):
        """Start the viser server (background threads) and build the scene and GUI.

        Websockets from other origins than the viewer's own page (and ``allowed_origins``) are closed.
        """
        import viser

        server = viser.ViserServer(host=host, port=port, verbose=verbose)
        self.server = server
        try:
            _guard_origins(server, tuple(allowed_origins))
        except Exception:
            server.stop()
            self.server = None
            raise
        pts = self.data.points
        centre = (pts.min(0) + pts.max(0)) / 2 if len(pts) else np.zeros(3)
        extent = float(np.ptp(pts[:, :2], axis=0).max()) if len(pts) else 1.0
        server.scene.set_up_direction("+z")
        server.initial_camera.position = tuple(centre + np.array([0.0, -0.45 * extent, 1.0 * extent]))
        server.initial_camera.look_at = tuple(centre)
        h = self._handles
        if self.data.splats is not None:
            h["splats"] = server.scene.add_gaussian_splats(
                "/scene/splats", centers=pts, covariances=self.data.splats["covariances"],
                rgbs=self.colors, opacities=self.data.splats["opacities"])
        else:
            h["cloud"] = server.scene.add_point_cloud("/scene/points", pts, self.colors, point_size=self.point_size,
                                                      point_shape="rounded", precision="float32")
        h["status"] = server.gui.add_markdown(self._status())
        h["mode"] = server.gui.add_dropdown("colour", tuple(self.available_modes()), initial_value=self.mode)
        h["query"] = server.gui.add_text("query", initial_value="", disabled=self.data.features is None)
        h["search"] = server.gui.add_button("search", disabled=self.data.features is None)
        if self.data.instances is not None:
            h["top"] = server.gui.add_button("top instances")

            @h["top"].on_click
            def _(_event) -> None:
                text = h["query"].value.strip()
                if text:
                    self.highlight_instances(text)

        @h["mode"].on_update
        def _(_event) -> None:
            mode = h["mode"].value
            if mode != self.mode and not (mode == "query" and self.similarity is None):
                self.set_mode(mode)

        @h["search"].on_click
        def _(_event) -> None:
            text = h["query"].value.strip()
            if text:
                self.set_query(text)

        return server

    def serve(self, host: str = "127.0.0.1", port: int = 8080, query: str | None = None, what: str = "points",
              allowed_origins: Iterable[str] = ()) -> None:
        """Start, optionally run ``query``, print the address and block until Ctrl-C, then stop."""
        self.start(host=host, port=port, allowed_origins=allowed_origins)
        if query:
            self.set_query(query)
        print(f"sas3d viewer for {self.data.name} ({len(self.data.points):,} {what}): http://{host}:{self.port}  (Ctrl-C to stop)")
        self.serve_forever()

    def serve_forever(self) -> None:
        """Block until Ctrl-C, then stop the server."""
        import time

        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    @property
    def port(self) -> int | None:
        return None if self.server is None else self.server.get_port()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            self._handles.clear()


def _guard_origins(server: Any, extra: tuple[str, ...]) -> None:
    """Close websockets whose Origin :func:`origin_allowed` refuses, before viser sends them anything.

    viser (1.x) has no origin option; its infra server keeps each raw websocket connection (with the
    handshake headers) in ``_live_connections`` before it runs the connect callbacks, and starts
    sending only after them. We add a callback there, and close foreign connections made before it.
    Fails (no server) if viser's internals change, rather than serve unguarded.
    """
    ws = getattr(server, "_websock_server", None)
    live = getattr(ws, "_live_connections", None)
    loop = getattr(ws, "_background_event_loop", None)
    if ws is None or not isinstance(live, dict) or loop is None:
        raise RuntimeError("this viser version does not expose its websocket connections: cannot check origins, not serving")
    port = server.get_port()

    def refused(raw: Any) -> bool:
        headers = raw.request.headers
        if origin_allowed(headers.get("Origin"), headers.get("Host"), port, extra):
            return False
        log.warning("viewer: refused a websocket from origin %s (not this viewer's page)", headers.get("Origin"))
        return True

    async def check(conn: Any) -> None:
        raw = live.get(conn.client_id)
        if raw is not None and refused(raw):
            await raw.close(POLICY_VIOLATION, "origin not allowed")

    ws.on_client_connect(check)
    for raw in list(live.values()):  # connected before the check was registered (nothing sent to them yet)
        if refused(raw):
            asyncio.run_coroutine_threadsafe(raw.close(POLICY_VIOLATION, "origin not allowed"), loop).result(timeout=10)
