"""How this manymodels was installed, as a requirement another environment can install it from.

A project made by `manymodels init` and a model's `requirements.txt` must name a manymodels that
installs: a version number alone is only installable when that version came from a package index.
PEP 610's `direct_url.json`, which pip writes for anything not installed from an index, says
where it came from instead: a VCS URL and commit, a local folder, or an archive (a wheel).
"""

from __future__ import annotations

import json
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

NAME = "manymodels"


def version() -> str:
    """This manymodels' version (from its installed metadata: the one place it is kept)."""
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def requirement() -> str:
    """A PEP 508 requirement that installs this manymodels elsewhere.

    From a VCS checkout: `manymodels @ git+https://host/repo@<commit>`; from a local folder or
    an archive: `manymodels @ file:///…` (or the archive's URL); from a package index (no
    `direct_url.json`): `manymodels==<version>`.
    """
    try:
        text = metadata.distribution(NAME).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        text = None
    if not text:
        return f"{NAME}=={version()}"
    return requirement_from_direct_url(json.loads(text), version())


def requirement_from_direct_url(direct_url: dict[str, object], release: str) -> str:
    """The requirement a PEP 610 `direct_url.json` document describes (the version when it describes none)."""
    url = str(direct_url.get("url") or "")
    vcs = direct_url.get("vcs_info")
    if url and isinstance(vcs, dict) and vcs.get("vcs") and vcs.get("commit_id"):
        return f"{NAME} @ {vcs['vcs']}+{url}@{vcs['commit_id']}"
    if url and ("dir_info" in direct_url or "archive_info" in direct_url):
        return f"{NAME} @ {url}"
    return f"{NAME}=={release}"


def check_requirement(text: str) -> str:
    """`text` if it is a PEP 508 requirement of manymodels on one line.

    Raises:
        ValueError: it is not (the message says why, for a prompt to ask again).
    """
    if "\n" in text or "\r" in text or '"' in text:
        raise ValueError("must be one requirement line without quotes")
    try:
        parsed = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"must be a requirement such as 'manymodels==0.1.0' or 'manymodels @ URL' ({exc})") from exc
    if canonicalize_name(parsed.name) != NAME:
        raise ValueError(f"must be a requirement of manymodels, not of {parsed.name}")
    return text
