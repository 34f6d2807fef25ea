"""Read YAML keeping where every key came from, so each problem can name file and line."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from manymodels.errors import BundleError

# Values a bundle file may expand to through YAML aliases (a real bundle has a few hundred).
MAX_VALUES = 100_000
# Levels a bundle may nest (a real bundle has under ten).
MAX_DEPTH = 100
# Bytes a bundle file may hold (a real bundle has a few kilobytes).
MAX_BYTES = 1 << 20

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    """A place in a bundle file: its name as the user gave it and a 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class SourceMap:
    """Where each key path of a document was written."""

    locations: dict[KeyPath, Location] = field(default_factory=dict)
    default: Location | None = None

    def locate(self, path: KeyPath) -> Location | None:
        """The location of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            loc = self.locations.get(path[:end])
            if loc is not None:
                return loc
        return self.default

    def prefix(self, path: KeyPath) -> str:
        """`file:line: ` for a key path, or an empty string when nothing is known."""
        loc = self.locate(path)
        return f"{loc}: " if loc else ""


def load_yaml(path: Path, shown_as: str) -> tuple[Any, SourceMap]:
    """Parse one YAML file into plain data plus the line of every key.

    Args:
        path: the file to read.
        shown_as: the name used in messages (relative to the bundle root).

    Raises:
        BundleError: the file is missing, not a regular file, too large, not UTF-8, not YAML, or has a
            duplicate key.
    """
    text = _read_text(path, shown_as)
    smap = SourceMap(default=Location(shown_as, 1))
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, smap
        _check_size(node, shown_as)
        data = _build(loader, node, (), shown_as, smap)
    except RecursionError as exc:  # the YAML parser itself recurses per level
        raise BundleError(f"{shown_as}: the YAML nests deeper than {MAX_DEPTH} levels") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise BundleError(f"{shown_as}:{line}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise BundleError(f"{shown_as}: invalid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return data, smap


def _read_text(path: Path, shown_as: str) -> str:
    """The file's text; never opens a device, a pipe or a folder (reading one could block or never end)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{shown_as}: cannot read bundle file: not a regular file")
        if info.st_size > MAX_BYTES:
            raise BundleError(f"{shown_as}: bundle file is {info.st_size:,} bytes; at most {MAX_BYTES:,} are read")
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{shown_as}: cannot read bundle file: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BundleError(f"{shown_as}:{line}: bundle file is not UTF-8 text (byte {exc.start})") from exc


def _check_size(root: yaml.Node, shown_as: str) -> None:
    """Refuse a document whose aliases expand it past MAX_VALUES values, that nests deeper than MAX_DEPTH, or
    whose aliases refer to themselves.

    Counted on the parsed nodes, each anchored node once (a "billion laughs" bundle of a few hundred
    bytes expands to billions of values: building it would exhaust the machine), without recursion.

    Raises:
        BundleError: naming the file and the line of the node that makes it too large or too deep.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    # (node, depth, children: None until the node is entered)
    stack: list[tuple[yaml.Node, int, list[yaml.Node] | None]] = [(root, 0, None)]
    while stack:
        node, depth, children = stack.pop()
        key = id(node)
        if children is None:
            if key in sizes:
                continue
            line = node.start_mark.line + 1
            if key in open_nodes:
                raise BundleError(f"{shown_as}:{line}: an alias refers to the value that contains it")
            if depth > MAX_DEPTH:
                raise BundleError(f"{shown_as}:{line}: the YAML nests deeper than {MAX_DEPTH} levels")
            if isinstance(node, yaml.MappingNode):
                inner = [part for pair in node.value for part in pair]
            elif isinstance(node, yaml.SequenceNode):
                inner = list(node.value)
            else:
                sizes[key] = 1
                continue
            open_nodes.add(key)
            stack.append((node, depth, inner))
            stack.extend((child, depth + 1, None) for child in inner if id(child) not in sizes)
            continue
        total = 1 + sum(sizes[id(child)] for child in children)
        if total > MAX_VALUES:
            raise BundleError(
                f"{shown_as}:{node.start_mark.line + 1}: the YAML expands to more than {MAX_VALUES:,} values "
                "through its aliases (&anchor / *alias); a bundle is far smaller"
            )
        open_nodes.discard(key)
        sizes[key] = total


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, shown_as: str, smap: SourceMap) -> Any:
    smap.locations.setdefault(path, Location(shown_as, node.start_mark.line + 1))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise BundleError(f"{shown_as}:{line}: keys must be strings; got {key!r}")
            if key in out:
                raise BundleError(f"{shown_as}:{line}: duplicate key {dotted((*path, key))}")
            smap.locations[(*path, key)] = Location(shown_as, line)
            out[key] = _build(loader, value_node, (*path, key), shown_as, smap)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), shown_as, smap) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def dotted(path: KeyPath) -> str:
    """`resources.models.demand.split[0]` for a key path."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
