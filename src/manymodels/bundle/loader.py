"""Load manymodels.yml: includes, target selection and overrides, variables, validation."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from pydantic import ValidationError

from manymodels.bundle.messages import describe, did_you_mean, show_value
from manymodels.bundle.schema import BundleDocument, ModelSpec, ResolvedBundle
from manymodels.bundle.source import KeyPath, SourceMap, dotted, load_yaml
from manymodels.errors import BundleError

BUNDLE_FILE = "manymodels.yml"
ENV_PREFIX = "MANYMODELS_VAR_"
EMBEDDED_DIR = ".manymodels"
_REF = re.compile(r"\$\{([^}]*)\}")
_INCLUDED_KEYS = ("variables", "targets", "resources")


@dataclass(frozen=True)
class BundleConfig:
    """A bundle resolved for one target, with where each of its keys was written."""

    root: Path
    file: Path
    resolved: ResolvedBundle
    source: SourceMap

    @property
    def name(self) -> str:
        """The bundle's name."""
        return self.resolved.bundle.name

    @property
    def target(self) -> str:
        """The target this configuration was resolved for."""
        return self.resolved.target

    @property
    def embedded_dir(self) -> Path:
        """`.manymodels/` beside the bundle: the embedded MLflow store and scratch space."""
        return self.root / EMBEDDED_DIR

    @property
    def tracking_uri(self) -> str:
        """The target's MLflow tracking URI, or the embedded sqlite store."""
        return self.resolved.tracking_uri or f"sqlite:///{self.embedded_dir / 'mlflow.db'}"

    @property
    def embedded_artifacts(self) -> Path | None:
        """Where artifacts go when tracking is embedded; None when a target names a server."""
        return None if self.resolved.tracking_uri else self.embedded_dir / "artifacts"

    def model(self, name: str) -> ModelSpec:
        """A model family by name, or a BundleError listing the ones that exist."""
        models = self.resolved.resources.models
        if name not in models:
            hint = did_you_mean(name, models) or f" (models: {', '.join(sorted(models)) or 'none'})"
            raise BundleError(f"{self.file.name}: no model {name!r} in resources.models{hint}")
        return models[name]

    def where(self, path: KeyPath) -> str:
        """`file:line: ` of a key of the resolved bundle."""
        return self.source.prefix(path)

    def resolve_path(self, path: str) -> Path:
        """A path from the bundle, relative to the bundle's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p


def find_bundle(start: Path | str | None = None) -> Path:
    """The bundle file: `start` itself if a file, else manymodels.yml in it or a parent folder."""
    here = Path(start or Path.cwd())
    if here.is_file():
        return here
    if start is not None and not here.exists():
        raise BundleError(f"{here}: no such bundle file or folder")
    for folder in (here, *here.resolve().parents):
        candidate = folder / BUNDLE_FILE
        if candidate.is_file():
            return candidate
    raise BundleError(f"no {BUNDLE_FILE} in {here} or any parent folder (pass --bundle PATH)")


def load_config(
    path: Path | str | None = None,
    target: str | None = None,
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> BundleConfig:
    """Load and validate a bundle for one target.

    Args:
        path: the bundle file or a folder holding manymodels.yml (default: search from cwd).
        target: the target name (default: the target marked `default: true`).
        variables: values given on the command line (`--var k=v`), the highest precedence.
        environ: the environment to read `MANYMODELS_VAR_<name>` from (default: os.environ).

    Raises:
        BundleError: every problem found, one line each.
    """
    file = find_bundle(path).resolve()
    root = file.parent
    doc, smap = load_yaml(file, file.name)
    if not isinstance(doc, dict):
        raise BundleError(f"{file.name}:1: the bundle must be a mapping with a 'bundle' key")
    _include(doc, smap, root)
    try:
        document = BundleDocument.model_validate(doc)
    except ValidationError as exc:
        raise BundleError(describe(exc, BundleDocument, smap)) from exc

    target_name = _pick_target(document, target, smap, file.name)
    tree, tree_map = _apply_target(doc, smap, target_name)
    values = _variable_values(document, target_name, variables or {}, os.environ if environ is None else environ, smap)
    problems: list[str] = []
    tree = _interpolate(tree, (), values, document, target_name, tree_map, problems)
    if problems:
        raise BundleError(problems)
    try:
        resolved = ResolvedBundle.model_validate(tree)
    except ValidationError as exc:
        raise BundleError(describe(exc, ResolvedBundle, tree_map)) from exc
    return BundleConfig(root=root, file=file, resolved=resolved, source=tree_map)


def _include(doc: dict[str, Any], smap: SourceMap, root: Path) -> None:
    """Merge the files named by `include:` (globs relative to the bundle) into `doc`.

    Raises:
        BundleError: every problem of every include (globs that match nothing, bad files), not the first.
    """
    patterns = doc.get("include") or []
    if not isinstance(patterns, list):
        return  # the schema reports the wrong type with its line
    problems: list[str] = []
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            continue
        where = f"{smap.prefix(('include', i))}include[{i}] {show_value(pattern)}"
        parts = PurePath(pattern).parts
        if not pattern or PurePath(pattern).is_absolute() or pattern.startswith("~"):
            problems.append(f"{where} must be a path relative to the bundle's folder")
            continue
        if ".." in parts:
            problems.append(f"{where} leaves the bundle's folder ('..'); includes stay inside it")
            continue
        matches = sorted(root.glob(pattern))
        outside = [m for m in matches if not m.resolve().is_relative_to(root)]
        if outside:
            # a symbolic link out of the folder: named, never read
            problems.append(f"{where} leaves the bundle's folder through a link: {outside[0].relative_to(root)}")
            continue
        if not matches:
            problems.append(f"{where} matches no file")
        for match in matches:
            try:
                _include_file(doc, smap, root, match)
            except BundleError as exc:
                problems += exc.problems
    if problems:
        raise BundleError(problems)


def _include_file(doc: dict[str, Any], smap: SourceMap, root: Path, match: Path) -> None:
    shown = str(match.relative_to(root)) if match.is_relative_to(root) else str(match)
    part, part_map = load_yaml(match, shown)
    if not isinstance(part, dict):
        raise BundleError(f"{shown}:1: an included file must be a mapping")
    problems: list[str] = []
    for key, value in part.items():
        if key not in _INCLUDED_KEYS:
            hint = did_you_mean(key, _INCLUDED_KEYS) or f" (allowed: {', '.join(_INCLUDED_KEYS)})"
            problems.append(f"{part_map.prefix((key,))}{key} is not allowed in an included file{hint}")
            continue
        try:
            _merge_new(doc, key, value, (key,), smap, part_map)
        except BundleError as exc:
            problems += exc.problems
    if problems:
        raise BundleError(problems)


def _merge_new(
    into: dict[str, Any], key: str, value: Any, path: KeyPath, into_map: SourceMap, from_map: SourceMap
) -> None:
    """Add an included subtree; a name defined in two files is an error naming both."""
    if key not in into:
        into[key] = value
        _copy_locations(from_map, path, into_map, path)
        return
    # Sections merge; a named resource (resources.<kind>.<name>, variables.<name>, targets.<name>) must be new.
    leaf_depth = 3 if path[0] == "resources" else 2
    if isinstance(into[key], dict) and isinstance(value, dict) and len(path) < leaf_depth:
        for sub, sub_value in value.items():
            _merge_new(into[key], sub, sub_value, (*path, sub), into_map, from_map)
        return
    raise BundleError(f"{from_map.prefix(path)}{dotted(path)} is already defined at {into_map.locate(path)}")


def _copy_locations(src: SourceMap, src_path: KeyPath, dst: SourceMap, dst_path: KeyPath) -> None:
    n = len(src_path)
    for key_path, loc in src.locations.items():
        if key_path[:n] == src_path:
            dst.locations[(*dst_path, *key_path[n:])] = loc


def _pick_target(document: BundleDocument, wanted: str | None, smap: SourceMap, file: str) -> str:
    names = list(document.targets)
    if wanted is not None:
        if names and wanted not in names:
            hint = did_you_mean(wanted, names) or f" (targets: {', '.join(names)})"
            raise BundleError(f"{file}: no target {wanted!r}{hint}")
        return wanted
    defaults = [n for n, t in document.targets.items() if t.default]
    if len(defaults) > 1:
        raise BundleError(
            f"{smap.prefix(('targets', defaults[1]))}targets: more than one default target: {', '.join(defaults)}"
        )
    if defaults:
        return defaults[0]
    if len(names) == 1:
        return names[0]
    if not names:
        return "dev"
    raise BundleError(
        f"{smap.prefix(('targets',))}no default target: pass -t with one of {', '.join(names)} "
        "or mark one `default: true`"
    )


def _apply_target(doc: dict[str, Any], smap: SourceMap, target: str) -> tuple[dict[str, Any], SourceMap]:
    """The resolved tree: the bundle's resources with the target's settings and overrides merged in."""
    tmap = SourceMap(default=smap.default)
    tree: dict[str, Any] = {"bundle": copy.deepcopy(doc["bundle"]), "target": target}
    _copy_locations(smap, ("bundle",), tmap, ("bundle",))
    tree["resources"] = copy.deepcopy(doc.get("resources") or {})
    _copy_locations(smap, ("resources",), tmap, ("resources",))
    raw_target = (doc.get("targets") or {}).get(target) or {}
    base: KeyPath = ("targets", target)
    for key in ("mode", "tracking_uri", "tracking", "engine", "signing_key", "trust"):
        if key in raw_target:
            tree[key] = copy.deepcopy(raw_target[key])
            _copy_locations(smap, (*base, key), tmap, (key,))
    overrides = raw_target.get("resources")
    if isinstance(overrides, dict):
        _deep_merge(tree["resources"], overrides, ("resources",), (*base, "resources"), smap, tmap)
    return tree, tmap


def _deep_merge(
    into: dict[str, Any],
    over: dict[str, Any],
    into_path: KeyPath,
    over_path: KeyPath,
    smap: SourceMap,
    tmap: SourceMap,
) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            loc = smap.locations.get((*over_path, key))
            if loc is not None:
                tmap.locations[(*into_path, key)] = loc
            _deep_merge(into[key], value, (*into_path, key), (*over_path, key), smap, tmap)
        else:
            into[key] = copy.deepcopy(value)
            _copy_locations(smap, (*over_path, key), tmap, (*into_path, key))


def _variable_values(
    document: BundleDocument, target: str, cli: Mapping[str, str], environ: Mapping[str, str], smap: SourceMap
) -> dict[str, Any]:
    """Each declared variable's value: --var, then MANYMODELS_VAR_<name>, the target's, the default."""
    declared = document.variables
    problems = [
        f"--var {name}: no variable {name!r} is declared in variables{did_you_mean(name, declared)}"
        for name in cli
        if name not in declared
    ]
    target_values = document.targets[target].variables if target in document.targets else {}
    problems += [
        f"{smap.prefix(('targets', target, 'variables', name))}targets.{target}.variables.{name}: "
        f"no variable {name!r} is declared in variables{did_you_mean(name, declared)}"
        for name in target_values
        if name not in declared
    ]
    if problems:
        raise BundleError(problems)
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in cli:
            values[name] = cli[name]
        elif ENV_PREFIX + name in environ:
            values[name] = environ[ENV_PREFIX + name]
        elif name in target_values and target_values[name] is not None:
            values[name] = target_values[name]
        elif spec.default is not None:
            values[name] = spec.default
    return values


def _interpolate(
    value: Any,
    path: KeyPath,
    values: dict[str, Any],
    document: BundleDocument,
    target: str,
    tmap: SourceMap,
    problems: list[str],
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), values, document, target, tmap, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), values, document, target, tmap, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(ref: str) -> Any:
        ref = ref.strip()
        if ref == "bundle.name":
            return document.bundle.name
        if ref == "bundle.target":
            return target
        if ref.startswith("var."):
            name = ref[4:]
            if name not in document.variables:
                problems.append(
                    f"{tmap.prefix(path)}{dotted(path)}: ${{{ref}}} is not declared in variables"
                    f"{did_you_mean(name, document.variables)}"
                )
                return ""
            if name not in values:
                problems.append(
                    f"{tmap.prefix(path)}{dotted(path)}: variable {name!r} has no value: give it a "
                    f"default, a value in targets.{target}.variables, {ENV_PREFIX}{name} or "
                    f"--var {name}=…"
                )
                return ""
            return values[name]
        problems.append(
            f"{tmap.prefix(path)}{dotted(path)}: unknown reference ${{{ref}}} "
            "(use ${var.<name>}, ${bundle.name} or ${bundle.target})"
        )
        return ""

    whole = _REF.fullmatch(value)
    if whole:  # a value that is only a reference keeps the variable's type (a number stays a number)
        return lookup(whole.group(1))
    return _REF.sub(lambda m: _as_text(lookup(m.group(1))), value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else show_value(value)
