"""Who runs a command and from what code: the user, and the git checkout's commit, branch and changes."""

from __future__ import annotations

import getpass
import shutil
import subprocess  # noqa: S404 - runs git with fixed arguments, never a shell
from pathlib import Path


def current_user() -> str:
    """Who is running this (recorded on runs, versions and locks)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def git_commit(folder: Path) -> str | None:
    """The git commit of the folder's checkout, or None outside git."""
    return _git(folder, "rev-parse", "HEAD")


def git_branch(folder: Path) -> str | None:
    """The checked-out branch (None outside git or on a detached HEAD)."""
    branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
    return None if branch in (None, "HEAD") else branch


def git_on_branch(folder: Path, branch: str) -> bool:
    """Whether HEAD is a commit of `branch` (its local branch or `origin/<branch>`): a CI job on a tag of it, say."""
    refs = (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}")  # full refs: never read as an option
    return any(_git(folder, "merge-base", "--is-ancestor", "HEAD", ref) is not None for ref in refs)


def git_dirty(folder: Path, ignore: Path | None = None) -> list[str] | None:
    """Uncommitted changes of the checkout (`git status --porcelain` lines), but those under `ignore`.

    Returns None outside git.
    """
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None or _git(folder, "rev-parse", "HEAD") is None:
        return None
    lines = (_git(folder, "status", "--porcelain") or "").splitlines()
    if ignore is None:
        return lines
    try:
        skip = ignore.resolve().relative_to(Path(top).resolve()).as_posix().rstrip("/") + "/"
    except ValueError:
        return lines
    return [line for line in lines if not (line[3:].strip('"') + "/").startswith(skip)]


def _git(folder: Path, *args: str) -> str | None:
    """A git command's output (fixed arguments, never a shell), or None when git or the checkout is missing."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        out = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [git, *args],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


