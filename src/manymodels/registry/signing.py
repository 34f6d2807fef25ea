"""Model packs signed with a keyed MAC, and checked before any of their models is loaded.

Checksums (the manifest's, per model and per shard file) catch damage, not tampering: whoever can write the artifact
store can change a model and its checksums together. With a signing key (a target's `signing_key`, else the
environment variable `MANYMODELS_SIGNING_KEY`), every pack written gets `signature.json`: HMAC-SHA256 over the
SHA-256 of its description (`pack.json`), its manifest (which holds every model's and every shard file's checksum)
and the other tables beside them. Opening a pack with a key checks the MAC and those digests on the bytes it
reads, before any model is read; each model's bytes are then checked against the signed manifest's checksum before
they are loaded, so no byte of a pack is used unsigned. The key never enters a pack, the bundle or a log: its id (a
MAC of a fixed text, which says nothing of the key) tells keys apart in messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from manymodels.errors import BundleError, RegistryError

SIGNATURE = "signature.json"
ENV_KEY = "MANYMODELS_SIGNING_KEY"
MIN_KEY_BYTES = 32
_FORMAT = 1
_ID_TEXT = b"manymodels signing key id"
KEYGEN = 'python -c "import secrets; print(secrets.token_hex(32))"'


class SignatureError(RegistryError):
    """A pack whose signature is missing or does not verify with the key configured: none of its models is loaded.

    `unsigned`: it has no signature at all (a pack written before the key was configured), rather than a wrong one.
    """

    def __init__(self, message: str, unsigned: bool = False) -> None:
        super().__init__(message)
        self.unsigned = unsigned


@dataclass(frozen=True)
class SigningKey:
    """A key read from where the target names it (`source` says where, for messages: never the key)."""

    secret: bytes = field(repr=False)
    source: str

    @property
    def key_id(self) -> str:
        """A short id of the key (a MAC of a fixed text: it tells keys apart and reveals nothing of them)."""
        return hmac.new(self.secret, _ID_TEXT, hashlib.sha256).hexdigest()[:16]

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


def read_key(env: str | None = None, file: str | Path | None = None) -> SigningKey:
    """The key an environment variable or a file holds (a file's trailing newline is not part of it).

    Raises:
        BundleError: the variable is not set, the file does not read, or the key is shorter than 32 bytes.
    """
    if env is not None:
        source = f"environment variable {env}"
        value = os.environ.get(env)
        if value is None:
            raise BundleError(f"signing_key: {source} is not set")
        secret = value.encode()
    else:
        source = f"file {file}"
        try:
            secret = Path(str(file)).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise BundleError(f"signing_key: cannot read {source}: {exc.strerror or exc}") from None
    if len(secret) < MIN_KEY_BYTES:
        raise BundleError(f"signing_key: the key in {source} is {len(secret)} bytes; it must be at least "
                          f"{MIN_KEY_BYTES} (make one with: {KEYGEN})")
    return SigningKey(secret, source)


_configured = False
_key: SigningKey | None = None


def use_key(key: SigningKey | None) -> None:
    """The key this process signs and checks packs with (None: none, whatever the environment says)."""
    global _configured, _key
    _configured, _key = True, key


def use_environment_key() -> None:
    """This process's key is `MANYMODELS_SIGNING_KEY`'s, if it is set (what a process with no target does)."""
    global _configured, _key
    _configured, _key = False, None


@contextmanager
def unchecked() -> Iterator[None]:
    """For the block, this process checks no signature (`sign` reads a pack unsigned); its key is as before after."""
    global _configured, _key
    before = _configured, _key
    _configured, _key = True, None
    try:
        yield
    finally:
        _configured, _key = before


def current_key() -> SigningKey | None:
    """This process's key: the one `use_key` set (a command's target), else `MANYMODELS_SIGNING_KEY`'s, else None.

    Raises:
        BundleError: `MANYMODELS_SIGNING_KEY` holds a key that is too short.
    """
    if _configured:
        return _key
    return read_key(env=ENV_KEY) if os.environ.get(ENV_KEY) else None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _message(files: dict[str, str]) -> bytes:
    return json.dumps({"format": _FORMAT, "files": files}, sort_keys=True, separators=(",", ":")).encode()


def sign_pack(root: Path, names: tuple[str, ...], key: SigningKey | None = None) -> bool:
    """Sign the files of a pack folder that exist among `names` (with `key`, else this process's); without a key,
    remove a signature left from before (it no longer matches). Returns whether the pack is signed."""
    key = key or current_key()
    where = root / SIGNATURE
    if key is None:
        where.unlink(missing_ok=True)
        return False
    files = {name: _digest((root / name).read_bytes()) for name in names if (root / name).is_file()}
    record = {"format": _FORMAT, "algorithm": "hmac-sha256", "key_id": key.key_id, "files": files,
              "mac": key.mac(_message(files))}
    partial = where.with_name(f"{SIGNATURE}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(record, indent=2), encoding="utf-8")
    partial.replace(where)
    return True


class Signed:
    """A pack's signature, checked: the digests it vouches for, by file name."""

    def __init__(self, where: str, record: bytes | None, key: SigningKey) -> None:
        self.where = where
        if record is None:
            raise SignatureError(f"{where}: not signed, and {key.source} holds a signing key: a pack written before "
                                 "the key was configured, or one whose signature was removed", unsigned=True)
        try:
            found = json.loads(record.decode("utf-8"))
            files, mac, key_id = found["files"], found["mac"], found["key_id"]
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise TypeError("files")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SignatureError(f"{where}: its signature does not read") from None
        if not isinstance(mac, str) or not hmac.compare_digest(mac, key.mac(_message(files))):
            other = f" (signed with key {key_id}, not {key.key_id})" if key_id != key.key_id else ""
            raise SignatureError(f"{where}: its signature does not verify with the key in {key.source}{other}")
        self.files: dict[str, str] = files

    def check(self, name: str, data: bytes) -> None:
        """That a file's bytes are those signed.

        Raises:
            SignatureError: the file is not among those signed, or its bytes changed.
        """
        signed = self.files.get(name)
        if signed is None:
            raise SignatureError(f"{self.where}: {name} is not signed")
        if not hmac.compare_digest(signed, _digest(data)):
            raise SignatureError(f"{self.where}: {name} changed after it was signed")
