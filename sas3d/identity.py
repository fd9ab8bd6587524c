"""Identities of teachers and text spaces: recorded in every artefact, checked where artefacts meet.

A feature is only meaningful next to the text features of the space it lives in, and a capability row
only describes the teacher that earned it. So each text space (encoder + model + any fixed map such as
MiniLM's centring, see :mod:`sas3d.text.encoders`) and each teacher (kind + model, see
:attr:`sas3d.teachers.base.Teacher.identity`) has one identity string. Fused features, capability files,
checkpoints and evaluation JSON carry them (metadata keys below), and a stage that combines two
artefacts refuses a mismatch with an error naming both sides. Artefacts written before identities
existed carry none: they are accepted, and the feature-width checks still apply to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from sas3d.errors import ConfigError, InputError

TEXT_SPACE = "text_space"  # metadata key: the text space identity of the features in an artefact
TEACHER = "teacher_identity"  # per-teacher fused features: the teacher's identity
TEACHERS = "teacher_identities"  # combined features, capability files, checkpoints: one per teacher


def teacher_identities_of(metadata: dict[str, Any] | None) -> list[str]:
    """The teacher identities an artefact records: its list (combined features, checkpoints), its one
    teacher (per-teacher fused features), or none (an older artefact)."""
    meta = metadata or {}
    if meta.get(TEACHERS):
        return [str(t) for t in meta[TEACHERS]]
    return [str(meta[TEACHER])] if meta.get(TEACHER) else []


def text_space_of(encoder: Any) -> str:
    """The identity of ``encoder``'s text space (its ``identity``, else its name)."""
    return str(getattr(encoder, "identity", None) or getattr(encoder, "name", None) or type(encoder).__name__)


def check_text_space(recorded: str | None, encoder: Any, path: str | Path | None, what: str) -> None:
    """Raise when ``recorded`` (an artefact's text space) is not ``encoder``'s (an encoder or an identity
    string); None (an older artefact) passes."""
    if recorded is None:
        return
    ours = encoder if isinstance(encoder, str) else text_space_of(encoder)
    if str(recorded) != ours:
        raise InputError(Path(path) if path is not None else None,
                         f"{what} live in the text space {recorded!r}, but the text encoder here is {ours!r}; "
                         "use the --text-encoder they were made with")


def common_text_space(metadatas: Iterable[dict[str, Any]], names: Iterable[str]) -> str | None:
    """The one text space recorded by several artefacts (None if none records one); raise if two differ."""
    seen: dict[str, str] = {}
    for meta, name in zip(metadatas, names):
        space = (meta or {}).get(TEXT_SPACE)
        if space is not None:
            seen.setdefault(str(space), name)
    if len(seen) > 1:
        (a, na), (b, nb) = list(seen.items())[:2]
        raise ConfigError(f"features from different text spaces cannot be combined: {na} is in {a!r}, {nb} in {b!r}")
    return next(iter(seen), None)
