"""The loaded versions and how traffic is routed between them.

Routing is an immutable snapshot replaced in one assignment, so a request reads a
consistent view without a lock and a swap never interrupts one in flight: the old
model object stays alive until the last request holding it is done.
"""

from __future__ import annotations

import bisect
import logging
import os
import random
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from serving.contract.constants import GOLDEN_TOLERANCE
from serving.contract.digest import sha256_bytes
from serving.contract.errors import IntegrityError, ServingError
from serving.contract.model import LoadedModel

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"^[0-9]{1,9}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class LoadRefused(ServingError):
    """A load request that is not allowed (path outside the root, bad version)."""


class Conflict(ServingError):
    """An admin change that would leave routing inconsistent."""


class NotLoaded(ServingError):
    pass


@dataclass(frozen=True)
class Routing:
    models: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    default: str | None = None
    split: tuple[tuple[str, float], ...] = ()   # (version, cumulative weight in (0, 1])
    shadow: str | None = None
    previous: str | None = None                  # the default before the current one (instant rollback)

    def pinned(self) -> set[str]:
        """The versions kept loaded: the default, the previous default, and any in the split or shadow."""
        return {v for v in (self.default, self.previous, self.shadow, *dict(self.split)) if v is not None}

    def pick(self, key: str | None) -> str | None:
        """The version for a request: the weighted split (sticky by key), else the default."""
        if not self.split:
            return self.default
        if key is None:
            u = random.random()
        else:
            u = int(sha256_bytes(key.encode())[:16], 16) / 2**64     # the digest's first 8 bytes, big-endian
        cum = [c for _v, c in self.split]
        return self.split[min(bisect.bisect_right(cum, u), len(self.split) - 1)][0]

    def weights(self) -> dict[str, float]:
        out, prev = {}, 0.0
        for version, cum in self.split:
            out[version] = round(cum - prev, 6)
            prev = cum
        return out


def resolve_inside(root: Path, model_dir: str, version: str) -> Path:
    """The version directory, refused unless it lies inside ``root`` once symlinks are resolved."""
    if not VERSION_RE.match(version or ""):
        raise LoadRefused(f"version must be a number, got {version!r}")
    if "\x00" in model_dir or any(len(part.encode()) > 255 for part in Path(model_dir).parts):
        raise LoadRefused(f"model_dir {model_dir[:80]!r}: not a usable path (a NUL byte or a component over "
                          "255 bytes)")
    root_real = Path(os.path.realpath(root))
    candidate = Path(model_dir)
    if not candidate.is_absolute():
        candidate = root_real / candidate
    try:
        target = Path(os.path.realpath(candidate / version))
    except (OSError, ValueError) as exc:
        raise LoadRefused(f"model_dir {model_dir[:80]!r}: {exc}") from None
    if target != root_real and root_real not in target.parents:
        raise LoadRefused(f"{model_dir[:200]}/{version} is outside the model root {root_real}")
    try:
        if not target.is_dir():
            raise LoadRefused(f"{target} is not a directory")
    except OSError as exc:      # a path longer than the OS takes (ENAMETOOLONG), or one it may not read
        raise LoadRefused(f"model_dir {model_dir[:80]!r}: not a usable path ({exc.strerror})") from None
    for dirpath, dirs, files in os.walk(target):
        for name in dirs + files:
            if os.path.islink(os.path.join(dirpath, name)):
                raise LoadRefused(f"{os.path.join(dirpath, name)} is a symlink; model files must be plain files")
    return target


class LoadedVersions:
    def __init__(self) -> None:
        self.routing = Routing()
        self._write = threading.Lock()
        self.last_error: str | None = None

    # ------------------------------------------------------------ loading
    def load(self, root: Path, model_dir: str, version: str, make_default: bool = True,
             warm=None, metadata_sha256: str | None = None) -> LoadedModel:
        """Verify, load, warm and golden-check a version; only then route to it.

        Raises:
            LoadRefused, IntegrityError: nothing was changed.
        """
        try:
            model, error = self._verified(root, model_dir, version, warm, metadata_sha256)
        except ServingError as exc:
            self.last_error = f"load of version {version} refused: {exc}"
            raise
        with self._write:
            current = self.routing
            existing = current.models.get(version)
            if existing is not None and existing.version_dir != model.version_dir:
                raise Conflict(f"version {version} is already loaded from {existing.version_dir}; unload it first")
            models = dict(current.models)
            models[version] = model
            default = version if make_default or current.default is None else current.default
            previous = current.default if default != current.default else current.previous
            routing = replace(current, models=MappingProxyType(models), default=default, previous=previous)
            # Every weekly release used to stay loaded for good: keep what routing can reach or an
            # instant rollback needs, and the version just loaded; the rest is unloaded.
            keep = routing.pinned() | {version}
            dropped = sorted(set(models) - keep, key=int)
            if dropped:
                routing = replace(routing, models=MappingProxyType({k: v for k, v in models.items() if k in keep}))
                log.info("unloaded version(s) %s: not the default, the previous default, in the split or the shadow",
                         ", ".join(dropped))
            self.routing = routing
            self.last_error = None
        log.info("loaded version %s from %s (golden max |Δp| %.1e)%s", version, model.version_dir, error,
                 " and made it the default" if default == version else "")
        return model

    @staticmethod
    def _verified(root: Path, model_dir: str, version: str, warm, metadata_sha256: str | None
                  ) -> tuple[LoadedModel, float]:
        if metadata_sha256 is not None and not SHA256_RE.match(metadata_sha256):
            raise LoadRefused(f"metadata_sha256 must be 64 lowercase hex digits, got {metadata_sha256[:80]!r}")
        path = resolve_inside(root, model_dir, version)
        model = LoadedModel.load(path, metadata_sha256)
        if model.metadata.version != version:
            raise IntegrityError(f"{path}: metadata.json says version {model.metadata.version}, not {version}")
        if warm is not None:
            warm(model)
        error = model.golden_max_error()
        if not error <= GOLDEN_TOLERANCE:
            raise IntegrityError(f"{path}: predictions differ from the golden examples by {error:.2e} "
                                 f"(tolerance {GOLDEN_TOLERANCE:.0e})")
        return model, error

    # ------------------------------------------------------------ state kept across restarts
    def snapshot(self) -> dict:
        """What a restarted server needs to serve exactly this again (JSON-ready; paths and hashes only)."""
        routing = self.routing
        return {"format": 1, "default": routing.default, "previous": routing.previous, "shadow": routing.shadow,
                "weights": routing.weights(),
                "models": {v: {"model_dir": str(m.version_dir.parent), "metadata_sha256": m.metadata_sha256}
                           for v, m in sorted(routing.models.items(), key=lambda kv: int(kv[0]))}}

    def restore(self, root: Path, snapshot: dict, warm=None) -> list[str]:
        """Load a snapshot's versions (each verified against the metadata hash it was served with) and
        route as it says, in one step. A version that no longer verifies is left out, and routing that
        needs it falls back: the default to the previous default, a split or shadow to none.

        Returns:
            the problems met, one line each (empty when everything came back).
        """
        problems, models = [], {}
        for version, entry in (snapshot.get("models") or {}).items():
            try:
                models[version], _error = self._verified(root, entry["model_dir"], version, warm,
                                                         entry.get("metadata_sha256"))
            except (ServingError, KeyError, TypeError) as exc:
                problems.append(f"version {version} not restored: {exc}")
        default = snapshot.get("default")
        previous = snapshot.get("previous")
        if default not in models:
            default, previous = (previous, None) if previous in models else (None, None)
        if previous not in models:
            previous = None
        weights = {v: float(w) for v, w in (snapshot.get("weights") or {}).items()}
        shadow = snapshot.get("shadow")
        if any(v not in models for v in weights) or (shadow is not None and shadow not in models):
            problems.append("traffic split and shadow not restored: a version in them was not restored")
            weights, shadow = {}, None
        with self._write:
            self.routing = Routing(models=MappingProxyType(models), default=default, previous=previous)
        if weights or shadow:
            self.set_split(weights, shadow)
        self.last_error = "; ".join(problems) or None
        return problems

    def converge(self, root: Path, snapshot: dict, warm=None) -> list[str]:
        """Serve exactly what ``snapshot`` says (another server process's admin change), all or nothing.

        Versions already loaded from the same directory with the same metadata hash are kept as they
        are; the others are loaded with the checks /load makes. If any of them fails, nothing changes:
        this process keeps serving what it served.

        Returns:
            the versions newly loaded.

        Raises:
            ServingError: a version could not be loaded or the routing is inconsistent (nothing changed).
        """
        current = self.routing
        wanted = snapshot.get("models") or {}
        models, loaded, problems = {}, [], []
        for version, entry in sorted(wanted.items(), key=lambda kv: int(kv[0])):
            try:
                model_dir, digest = entry["model_dir"], entry.get("metadata_sha256")
                have = current.models.get(version)
                if (have is not None and have.metadata_sha256 == digest
                        and os.path.realpath(have.version_dir) == os.path.realpath(Path(model_dir) / version)):
                    models[version] = have
                    continue
                models[version], _error = self._verified(root, model_dir, version, warm, digest)
                loaded.append(version)
            except (ServingError, KeyError, TypeError) as exc:
                problems.append(f"version {version}: {exc}")
        if problems:
            raise ServingError("could not serve the host's desired state, kept what was served: " + "; ".join(problems))
        default, previous, shadow = snapshot.get("default"), snapshot.get("previous"), snapshot.get("shadow")
        weights = {str(v): float(w) for v, w in (snapshot.get("weights") or {}).items()}
        if default is not None and default not in models:
            raise Conflict(f"the desired state's default {default} is not among its versions")
        staged = LoadedVersions()
        staged.routing = Routing(models=MappingProxyType(models), default=default,
                                 previous=previous if previous in models else None)
        if weights or shadow:
            staged.set_split(weights, shadow)
        with self._write:
            self.routing = staged.routing
        return loaded

    # ------------------------------------------------------------ admin
    def unload(self, version: str) -> None:
        with self._write:
            current = self.routing
            if version not in current.models:
                raise NotLoaded(f"version {version} is not loaded")
            if version == current.default:
                raise Conflict(f"version {version} is the default; make another version the default first")
            if version in dict(current.split) or version == current.shadow:
                raise Conflict(f"version {version} is in the traffic split or the shadow; change those first")
            models = {k: v for k, v in current.models.items() if k != version}
            self.routing = replace(current, models=MappingProxyType(models))

    def set_default(self, version: str) -> None:
        with self._write:
            if version not in self.routing.models:
                raise NotLoaded(f"version {version} is not loaded")
            current = self.routing
            previous = current.default if version != current.default else current.previous
            self.routing = replace(current, default=version, previous=previous)

    def set_split(self, weights: dict[str, float], shadow: str | None) -> None:
        with self._write:
            current = self.routing
            missing = [v for v in [*weights, *([shadow] if shadow else [])] if v not in current.models]
            if missing:
                raise NotLoaded(f"not loaded: {', '.join(missing)}")
            if any(w < 0 for w in weights.values()):
                raise Conflict("weights must not be negative")
            total = sum(weights.values())
            if weights and total <= 0:
                raise Conflict("weights must add up to more than 0")
            split, cum = [], 0.0
            for version in sorted(weights, key=int):
                if weights[version] > 0:
                    cum += weights[version] / total
                    split.append((version, cum))
            if split:
                split[-1] = (split[-1][0], 1.0)
            self.routing = replace(current, split=tuple(split), shadow=shadow)
