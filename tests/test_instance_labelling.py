"""Built-in proposals (merge hierarchy vs brute force, objects recovered), labelling formula, ensemble, NMS, queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sas3d.instances.builtin import MIN_LIFETIME, ProposalConfig, agglomerate, contact_pairs, generate_proposals, merge_hierarchy
from sas3d.instances.features import PointFeatureSet, labeller_features
from sas3d.instances.labelling import LabelConfig, label_proposals, mask_nms, rank_instances
from sas3d.instances.types import Instances, Proposals, mask_iou, masks_from_dense, masks_from_ids


def _brute_force_hierarchy(sums, pairs, levels):
    """Naive agglomeration: every step rescans all adjacent region pairs for the most similar means."""
    regions = {i: {i} for i in range(len(sums))}
    feat = {i: sums[i].astype(np.float64).copy() for i in range(len(sums))}
    edges = {(int(a), int(b)) for a, b in pairs}
    out = []

    def cos(a, b):
        na, nb = np.linalg.norm(feat[a]), np.linalg.norm(feat[b])
        return 0.0 if na == 0 or nb == 0 else float(feat[a] @ feat[b] / (na * nb))

    for th in sorted(levels, reverse=True):
        while True:
            cand = [(cos(a, b), a, b) for a in regions for b in regions if a < b
                    and any((min(x, y), max(x, y)) in edges for x in regions[a] for y in regions[b])]
            if not cand:
                break
            s, a, b = max(cand)
            if s < th:
                break
            regions[a] |= regions.pop(b)
            feat[a] = feat[a] + feat.pop(b)
        out.append({frozenset(v) for v in regions.values()})
    return out


def _partition_sets(labels):
    return {frozenset(np.flatnonzero(labels == r).tolist()) for r in np.unique(labels)}


@pytest.mark.parametrize("seed", range(4))
def test_merge_hierarchy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    s, c = 14, 6
    protos = rng.normal(size=(3, c))
    sums = protos[rng.integers(0, 3, s)] * rng.integers(1, 5, (s, 1)) + 0.6 * rng.normal(size=(s, c))
    pairs = np.array(sorted({(min(a, b), max(a, b)) for a, b in rng.integers(0, s, (30, 2)) if a != b}))
    levels = [0.9, 0.6, 0.3, 0.0]
    got = merge_hierarchy(sums, pairs, levels)
    want = _brute_force_hierarchy(sums, pairs, levels)
    assert [_partition_sets(g) for g in got] == want
    assert len(want[0]) > len(want[-1])  # the levels really are different granularities


def test_region_lifetime_known_answer():
    # superpoints 0 - 1 - 2 in a chain: 0 and 1 nearly parallel (cosine 0.96), 2 orthogonal to both
    sums = np.array([[1.0, 0.0, 0.0], [0.96, 0.28, 0.0], [0.0, 0.0, 1.0]])
    tree = agglomerate(sums, np.array([[0, 1], [1, 2]]), [0.9, 0.5, -0.5])
    # nodes: 0, 1, 2 (superpoints, born 1.0), 3 = {0, 1} born at 0.96, 4 = all born at cos({0,1}, 2) = 0
    np.testing.assert_allclose(tree.birth, [1.0, 1.0, 1.0, 0.96, 0.0])
    np.testing.assert_allclose(tree.death, [0.96, 0.96, 0.0, 0.0, -1.0])  # the last region is never absorbed
    np.testing.assert_allclose(tree.lifetime(0), [0.48, 0.48, 0.5])  # (birth - death) / 2 of {0, 1} and {2}
    np.testing.assert_allclose(tree.lifetime(1), [0.48, 0.48, 0.5])
    np.testing.assert_allclose(tree.lifetime(2), [0.5, 0.5, 0.5])  # (0 - (-1)) / 2


def test_featureless_region_has_no_lifetime():
    # chain 0 - 1 - 2 - 3: superpoint 2 has no feature (no camera saw it); its cosine with everything is the
    # convention 0, which made it a region from 1 down to 0, lifetime 0.5, above every real object
    sums = np.array([[1.0, 0.0, 0.0], [0.96, 0.28, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    tree = agglomerate(sums, np.array([[0, 1], [1, 2], [2, 3]]), [0.9, 0.5])
    np.testing.assert_array_equal(tree.featureless[:4], [False, False, True, False])
    life = tree.lifetime(1)  # at 0.5: {0, 1}, {2}, {3}
    assert life[2] == MIN_LIFETIME
    np.testing.assert_allclose(life[[0, 1]], 0.48)  # {0, 1}: born 0.96, absorbed at 0 (by the featureless neighbour)
    # a union of two featureless superpoints is featureless too
    t2 = agglomerate(np.zeros((2, 3)), np.array([[0, 1]]), [0.5, -0.5])
    assert t2.featureless.tolist() == [True, True, True] and t2.lifetime(1).tolist() == [MIN_LIFETIME] * 2


def test_featureless_proposal_ranks_last(room):
    """End to end: a proposal of points without fused features (unseen) gets the floor score, so a student that
    labels every point cannot rank it above the objects."""
    feats = room["feats"]
    unseen = room["obj"] == 3  # the second chair: no camera saw it
    f = feats.features.clone()
    f[torch.from_numpy(unseen)] = 0.0
    props = generate_proposals(room["points"], room["spx"], PointFeatureSet(f, ~unseen, "fusion"), ProposalConfig(levels=[0.9, 0.7, 0.5]))
    covered = np.asarray(props.masks[:, np.flatnonzero(unseen)].sum(axis=1)).reshape(-1) > 0
    inside = np.asarray(props.masks[:, np.flatnonzero(~unseen)].sum(axis=1)).reshape(-1) == 0
    only_unseen = covered & inside
    assert only_unseen.any()
    assert (props.scores[only_unseen] == MIN_LIFETIME).all()
    assert props.scores[~only_unseen].min() > MIN_LIFETIME


@pytest.mark.parametrize("seed", range(3))
def test_region_lifetime_matches_brute_force_threshold_sweep(seed):
    """A region's lifetime = the span of merge thresholds at which it is a region: count the thresholds of a
    fine sweep from 1 to -1 at which the brute-force agglomeration has it (mean-linkage inversions: never)."""
    rng = np.random.default_rng(seed)
    s, c = 10, 5
    protos = rng.normal(size=(3, c))
    sums = protos[rng.integers(0, 3, s)] * rng.integers(1, 5, (s, 1)) + 0.6 * rng.normal(size=(s, c))
    pairs = np.array(sorted({(min(a, b), max(a, b)) for a, b in rng.integers(0, s, (22, 2)) if a != b}))
    step = 0.01
    sweep = list(np.round(np.arange(1.0, -1.0 - 1e-9, -step), 6))
    counts: dict[frozenset, int] = {}
    for regions in _brute_force_hierarchy(sums, pairs, sweep):
        for r in regions:
            counts[r] = counts.get(r, 0) + 1
    tree = agglomerate(sums, pairs, sweep)
    checked = 0
    for level, part in enumerate(tree.partitions):
        life = tree.lifetime(level)
        for r in np.unique(part):
            members = np.flatnonzero(part == r)
            span = counts[frozenset(members.tolist())] * step  # thresholds in (death, birth], the last one at -1 included
            assert abs(2 * life[members[0]] - span) <= step + 1e-9, (members, life[members[0]], span)
            checked += 1
    assert checked > s  # many (level, region) pairs, several granularities


def _box_surface(lo, hi, step=0.04):
    """Points on the surface of an axis-aligned box (a grid on each face)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    pts = []
    for axis in range(3):
        for side in (lo[axis], hi[axis]):
            others = [a for a in range(3) if a != axis]
            g = np.meshgrid(*[np.arange(lo[a], hi[a] + 1e-9, step) for a in others], indexing="ij")
            face = np.zeros((g[0].size, 3))
            face[:, axis] = side
            face[:, others[0]], face[:, others[1]] = g[0].ravel(), g[1].ravel()
            pts.append(face)
    return np.unique(np.round(np.concatenate(pts), 5), axis=0)


@pytest.fixture(scope="module")
def room():
    """A floor with two chairs and a table standing on it (touching it), chair 1 touching the table."""
    from sas3d.text.labelsets import get_label_set

    floor = np.stack(np.meshgrid(np.arange(0, 3, 0.04), np.arange(0, 2, 0.04), [0.0], indexing="ij"), -1).reshape(-1, 3)
    objs = [floor, _box_surface((0.3, 0.3, 0.0), (0.8, 0.8, 0.9)), _box_surface((0.84, 0.3, 0.0), (1.8, 1.2, 0.75)),
            _box_surface((2.2, 0.5, 0.0), (2.7, 1.0, 0.9))]
    names = ["floor", "chair", "table", "chair"]
    pts = np.concatenate(objs).astype(np.float32)
    obj = np.concatenate([np.full(len(o), i) for i, o in enumerate(objs)])
    ls = get_label_set("scannet20")
    gen = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(len(ls), 48, generator=gen), dim=1)  # stand-ins for the class prompts
    cls = torch.tensor([ls.index(n) for n in names])[obj]
    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(text[cls] + 0.08 * torch.randn(len(pts), text.shape[1], generator=gen), dim=1)
    # superpoints: each object cut into slabs along x (so objects must be re-assembled by merging)
    spx = obj * 100 + np.floor(pts[:, 0] / 0.25).astype(int)
    spx = np.unique(spx, return_inverse=True)[1]
    return dict(points=pts, obj=obj, names=names, text=text, classes=list(ls.classes), feats=PointFeatureSet(feats, np.ones(len(pts), bool), "test"), spx=spx)


def test_builtin_proposals_recover_touching_objects(room):
    props = generate_proposals(room["points"], room["spx"], room["feats"], ProposalConfig(levels=[0.9, 0.7, 0.5]))
    gt = masks_from_ids(room["obj"] + 1)[1]
    iou = mask_iou(gt, props.masks)
    np.testing.assert_allclose(iou.max(axis=1), 1.0)  # every object is exactly one proposal
    assert (props.sizes >= 100).all() and props.metadata["contacts"] > 0
    # ranked by lifetime: the objects (a slab's neighbours share its class) outlive every union of two objects
    deep = generate_proposals(room["points"], room["spx"], room["feats"], ProposalConfig(levels=[0.9, 0.7, 0.5, 0.0], score="lifetime", nms_iou=None))
    whole = mask_iou(gt, deep.masks).argmax(axis=1)
    unions = np.setdiff1d(np.arange(len(deep)), whole)
    assert len(unions) and deep.scores[whole].min() > deep.scores[unions].max()
    assert ((deep.scores > 0) & (deep.scores <= 1)).all()
    flat = generate_proposals(room["points"], room["spx"], room["feats"], ProposalConfig(levels=[0.9, 0.7, 0.5], score="none"))
    np.testing.assert_array_equal(flat.scores, 1.0)
    from sas3d.errors import ConfigError

    with pytest.raises(ConfigError, match="builtin.score: unknown proposal score 'size'"):  # a user error, not a traceback
        generate_proposals(room["points"], room["spx"], room["feats"], ProposalConfig(score="size"))
    with pytest.raises(ConfigError, match="builtin.nms_iou must be in"):
        generate_proposals(room["points"], room["spx"], room["feats"], ProposalConfig(nms_iou=1.5))
    # without the contact graph nothing merges: the slabs stay apart
    far = generate_proposals(room["points"], room["spx"], room["feats"], ProposalConfig(levels=[0.5], adjacency_radius=1e-4, min_points=1))
    assert len(far) == room["spx"].max() + 1


def _fragment_line():
    """Points on a line: a wall W (1000 points) touching object O = fragment A (100) + B1 (200) + B2 (200).
    B1 and B2 merge at cosine 0.7, A joins them at 0.65, O joins W at 0.32: the fragment A (born 1, absorbed
    at 0.65) outlives the whole object O (born 0.65, absorbed at 0.32)."""
    t = np.arccos(0.7) / 2
    b1, b2 = np.array([np.cos(t), np.sin(t), 0, 0]), np.array([np.cos(t), -np.sin(t), 0, 0])
    a = np.array([0.65, 0, np.sqrt(1 - 0.65 ** 2), 0])
    o = 100 * a + 200 * b1 + 200 * b2
    o /= np.linalg.norm(o)
    w = 0.32 * o + np.sqrt(1 - 0.32 ** 2) * np.array([0, 0, 0, 1.0])
    sizes, feats = [1000, 100, 200, 200], [w, a, b1, b2]
    spx = np.repeat(np.arange(4), sizes)
    pts = np.zeros((len(spx), 3), np.float32)
    pts[:, 0] = np.arange(len(spx)) * 0.01
    f = torch.tensor(np.stack(feats)[spx], dtype=torch.float32)
    return pts, spx, PointFeatureSet(f, np.ones(len(spx), bool), "test")


def test_stability_ranks_the_whole_object_above_a_persistent_fragment():
    pts, spx, feats = _fragment_line()
    regions = {(0,): "W", (1,): "A", (2,): "B1", (3,): "B2", (1, 2, 3): "O"}

    def scored(cfg):
        props = generate_proposals(pts, spx, feats, cfg)
        return {regions[tuple(np.unique(spx[props.point_indices(i)]))]: props.scores[i] for i in range(len(props))}

    life = scored(ProposalConfig(levels=[0.9, 0.5], score="lifetime"))
    np.testing.assert_allclose([life[k] for k in ("W", "A", "B1", "B2", "O")], [0.34, 0.175, 0.15, 0.15, 0.165], atol=1e-6)
    assert life["A"] > life["O"]  # the lifetime ranks the fragment first
    stab = scored(ProposalConfig(levels=[0.9, 0.5]))  # the default: stability = lifetime x points (HDBSCAN)
    np.testing.assert_allclose([stab[k] for k in ("W", "A", "B1", "B2", "O")], [340.0, 17.5, 30.0, 30.0, 82.5], atol=1e-4)
    assert stab["O"] > max(stab["A"], stab["B1"], stab["B2"])


def test_builtin_proposals_have_no_duplicates():
    """A region recorded at two levels with a sliver more is one object twice: NMS keeps the better one."""
    pts, spx, feats = _fragment_line()
    cfg = dict(levels=[0.9, 0.68, 0.5])  # at 0.68 the object is B1 + B2 (400 points) without the fragment A
    every = generate_proposals(pts, spx, feats, ProposalConfig(**cfg, nms_iou=None))
    props = generate_proposals(pts, spx, feats, ProposalConfig(**cfg))
    regions = lambda p: [tuple(np.unique(spx[p.point_indices(i)])) for i in range(len(p))]
    assert sorted(regions(every)) == [(0,), (1,), (1, 2, 3), (2,), (2, 3), (3,)]
    # B1 + B2 (stability 0.025 x 400 = 10) overlaps O (82.5) with IoU 0.8: dropped; the rest overlap <= 0.4
    assert regions(props) == [(0,), (1, 2, 3), (2,), (3,), (1,)]  # in descending score
    assert props.metadata["recorded"] == 6 and props.metadata["nms_iou"] == 0.5
    iou = mask_iou(props.masks, props.masks)
    np.fill_diagonal(iou, 0)
    assert iou.max() <= 0.5


def test_contact_pairs_known_answer():
    pts = np.array([[0, 0, 0], [0.03, 0, 0], [1, 0, 0], [1.03, 0, 0], [3, 0, 0]], dtype=np.float32)
    assert contact_pairs(pts, np.array([0, 1, 1, 2, 3]), 0.05).tolist() == [[0, 1], [1, 2]]
    assert contact_pairs(pts, np.array([0, 1, 2, 3, 4]), 0.05, faces=np.array([[2, 4, 3]])).tolist() == [[0, 1], [2, 3], [2, 4], [3, 4]]


def test_labelling_formula(room):
    masks = masks_from_ids(room["obj"] + 1)[1]
    mixed = masks_from_dense(((room["obj"] == 1) | (room["obj"] == 2))[None])  # chair + table in one proposal
    import scipy.sparse as sp

    props = Proposals(sp.vstack([masks, mixed]).tocsr(), np.array([1.0, 1.0, 1.0, 1.0, 0.8]))
    cfg = LabelConfig(temperature=0.05, stuff_classes=[])  # every class a candidate: the formula alone
    inst = label_proposals(props, room["feats"], room["text"], room["classes"], cfg)
    f, t = room["feats"].features, room["text"]
    point_cls = (f @ t.T).argmax(1).numpy()
    for i in range(len(inst)):
        idx = inst.point_indices(i)
        mean = f[idx].mean(0)
        mean = mean / mean.norm()
        sims = mean @ t.T
        c = int(sims.argmax())
        prob = float(torch.softmax(sims / 0.05, 0)[c])
        src = [k for k in range(len(props)) if np.array_equal(props.point_indices(k), idx)][0]
        expected = prob * np.mean(point_cls[idx] == c) * props.scores[src]
        assert inst.classes[i] == c and inst.scores[i] == pytest.approx(expected, rel=1e-5)
    assert np.all(np.diff(inst.scores) <= 0)  # best first
    names = [room["classes"][c] for c in inst.classes]
    assert sorted(names[:4]) == ["chair", "chair", "floor", "table"]
    assert inst.scores[-1] < 0.75  # the mixed proposal: about half its points disagree with its class


def test_stuff_classes_are_never_an_instance_class(room):
    """With wall / floor / ceiling as stuff (the default), the floor proposal takes its most similar object
    class, with the softmax over the object classes only, and its points (floor to themselves) give it
    zero agreement, so it ranks last; the object proposals keep their classes."""
    masks = masks_from_ids(room["obj"] + 1)[1]
    props = Proposals(masks, np.ones(len(masks.indptr) - 1))
    inst = label_proposals(props, room["feats"], room["text"], room["classes"], LabelConfig(temperature=0.05))
    classes = room["classes"]
    objects = [i for i, c in enumerate(classes) if c not in ("wall", "floor", "ceiling")]
    f, t = room["feats"].features, room["text"]
    floor_points = np.flatnonzero(room["obj"] == 0)
    assert {classes[int((f[floor_points] @ t.T).argmax(1).mode().values)]} == {"floor"}  # the fixture's floor
    i = [k for k in range(len(inst)) if np.array_equal(inst.point_indices(k), floor_points)][0]
    mean = f[floor_points].mean(0)
    sims = (mean / mean.norm()) @ t[objects].T
    assert classes[inst.classes[i]] == classes[objects[int(sims.argmax())]] != "floor"
    assert inst.metadata["probability"][i] == pytest.approx(float(torch.softmax(sims / 0.05, 0).max()), rel=1e-5)
    assert inst.scores[i] == 0.0 and i == len(inst) - 1
    assert sorted(classes[c] for c in inst.classes[:3]) == ["chair", "chair", "table"]
    with pytest.raises(ValueError, match="stuff"):
        label_proposals(props, room["feats"], room["text"], room["classes"], LabelConfig(stuff_classes=list(classes)))


def test_fusion_labeller_ignores_unseen_points(room):
    f = room["feats"].features.clone()
    seen = np.ones(len(f), bool)
    chair = np.flatnonzero(room["obj"] == 1)
    seen[chair[: len(chair) // 2]] = False
    f[chair[: len(chair) // 2]] = room["text"][room["classes"].index("bathtub")]  # garbage where unseen
    pf = labeller_features("fusion", fused=f.half(), seen=seen)
    props = Proposals(masks_from_dense((room["obj"] == 1)[None]), np.ones(1))
    inst = label_proposals(props, pf, room["text"], room["classes"])
    assert room["classes"][inst.classes[0]] == "chair" and inst.metadata["agreement"][0] == pytest.approx(1.0, abs=0.02)


def test_ensemble_features_pick_the_more_confident_source(room):
    t = room["text"]
    n = 4
    f3 = torch.nn.functional.normalize(t[[4, 4, 6, 6]] + 0.5 * t[[5, 5, 5, 5]], dim=1)  # blurry 3D
    f2 = t[[4, 6, 6, 4]].clone()  # sharp 2D (cosine 1 with its class)
    seen = np.array([True, True, False, True])
    got = labeller_features("ensemble", feat3d=f3, fused=f2, seen=seen, class_text=t).features
    best = lambda x: (torch.nn.functional.normalize(x, dim=1) @ t.T).max(1).values  # noqa: E731
    for i in range(n):
        want = f2[i] if seen[i] and best(f2[i:i + 1]) > best(f3[i:i + 1]) else f3[i]
        torch.testing.assert_close(got[i], torch.nn.functional.normalize(want, dim=0))
    assert torch.equal(got[2], f3[2])  # unseen -> 3D


def test_mask_nms_and_ranked_queries(room):
    m = masks_from_dense(np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]], bool))
    assert mask_nms(m, np.array([0.5, 0.9, 0.4]), 0.5).tolist() == [1, 2]  # IoU(0, 1) = 0.75: the weaker is dropped
    assert mask_nms(m, np.array([0.5, 0.9, 0.4]), 0.8).tolist() == [1, 0, 2]
    assert mask_nms(m, np.array([0.5, 0.9, 0.4]), 0.5, groups=np.array([0, 1, 0])).tolist() == [1, 0, 2]
    # containment: mask 1 lies inside mask 0 (3/3), so it goes even at a threshold IoU would pass
    assert mask_nms(m, np.array([0.9, 0.5, 0.4]), 0.8, containment=True).tolist() == [0, 2]
    masks = masks_from_ids(room["obj"] + 1)[1]
    inst = label_proposals(Proposals(masks, np.ones(4)), room["feats"], room["text"], room["classes"])
    emb = room["text"][room["classes"].index("chair")] + 0.3 * room["text"][room["classes"].index("sofa")]  # "something like a chair"
    ranked = rank_instances(inst, emb, top_k=4)
    assert [r.class_name for r in ranked[:2]] == ["chair", "chair"] and ranked[0].similarity >= ranked[1].similarity
    assert len({r.index for r in ranked}) == len(ranked)


def test_point_ids_prefer_higher_score():
    m = masks_from_dense(np.array([[1, 1, 1, 0], [0, 1, 1, 1]], bool))
    inst = Instances(m, np.array([0, 1]), np.array([0.4, 0.8]), ["a", "b"])
    assert inst.point_ids().tolist() == [0, 1, 1, 1]


def test_label_config_nms_and_exclusions(room):
    import scipy.sparse as sp

    masks = masks_from_ids(room["obj"] + 1)[1]
    dup = sp.vstack([masks, masks[1:2]]).tocsr()  # chair 1 twice
    props = Proposals(dup, np.array([1.0, 1.0, 1.0, 1.0, 0.5]))
    assert len(label_proposals(props, room["feats"], room["text"], room["classes"])) == 5
    inst = label_proposals(props, room["feats"], room["text"], room["classes"],
                           LabelConfig(nms_iou=0.5, exclude_classes=["floor"], stuff_classes=[]))
    assert sorted(room["classes"][c] for c in inst.classes) == ["chair", "chair", "table"]
    assert inst.features.shape == (3, room["text"].shape[1])
