"""`verify`: check a registered version's pack as a serving process would, without loading a model: its signature
(with a signing key), every shard file's and model's checksum, and what its models' formats ask to be trusted.
`sign`: sign a pack written before the key was configured, once its files are found as they were trained."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from manymodels.errors import BundleError, RegistryError, Untrusted
from manymodels.estimators import FORMAT_PICKLE, pickle_allowed
from manymodels.jobs.context import Target
from manymodels.registry import manifest as mf
from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack_info import SIGNED
from manymodels.registry.run_state import RunInfo, local_path
from manymodels.registry.signing import SIGNATURE, current_key, sign_pack, unchecked


@dataclass(frozen=True)
class SignOutcome:
    """What `sign` signed: a version's (or a run's) pack and its fallback's."""

    model: str
    version: int | None
    run_id: str
    key: str
    packs: int


@dataclass(frozen=True)
class VerifyOutcome:
    """What `verify` checked of one version."""

    model: str
    version: int
    run_id: str
    key: str | None  # the signing key's id and where it is read (None: no key, so no signature checked)
    models: int
    shards: int
    formats: dict[str, int] = field(default_factory=dict)  # the models' formats as the manifest lists them


def _version_run(target: Target, model: str, version: int | None) -> tuple[int, RunInfo]:
    """The version asked for (default: the champion) and the run whose pack it serves."""
    target.model(model)
    if version is None:
        champion = target.champion(model)
        if champion is None:
            raise RegistryError(f"model {model!r} has no champion: name a version with --version")
        version = champion.version
    return version, target.resolve_version(model, version)


def verify_version(target: Target, model: str, version: int | None = None) -> VerifyOutcome:
    """Check a version of a model family (default: the champion): the pack's signature when a key is configured,
    then every shard file read whole against its checksum and each model's (the fallback's and pooled models' too).

    Raises:
        SignatureError: the pack is not signed, or not with this key (nothing of it was used).
        DamagedModel: a shard or model whose bytes differ from those written.
        Untrusted: it holds models saved with pickle and the target does not say `trust: pickle`.
        NotFound, RegistryError: no such version, no champion.
    """
    version, info = _version_run(target, model, version)
    what = f"model {model!r} version {version}"
    try:
        pack = target.open_pack(info)
        pack.verify()
    except RegistryError as exc:
        raise type(exc)(f"{what}: {exc}") from None
    served = mf.served(pack.manifest)
    formats = {str(k): int(v) for k, v in served[mf.MODEL_FORMAT].value_counts().items()} \
        if mf.MODEL_FORMAT in served.columns else {}
    if formats.get(FORMAT_PICKLE) and not pickle_allowed():
        raise Untrusted(f"{what}: {formats[FORMAT_PICKLE]} of its models are saved with pickle, which runs code when "
                        "loaded, and the target does not say `trust: pickle`")
    key = current_key()
    shards = int(served[mf.SHARD].nunique()) if mf.SHARD in served.columns else 0
    return VerifyOutcome(model, version, info.run_id, None if key is None else f"{key.key_id} ({key.source})",
                         len(served), shards, formats)


def sign_version(target: Target, model: str, version: int | None = None, run_id: str | None = None) -> SignOutcome:
    """Sign the pack of a version (default: the champion) or of a training run with the target's key, once every
    shard file and model is found as it was trained (their checksums): what makes a fleet trained before the key was
    configured usable with it. Whoever runs it vouches that the tracking and artifact stores were not written by
    anyone else since (checksums catch damage, not tampering).

    Raises:
        BundleError: no signing key is configured.
        DamagedModel: a shard or model differs from what was trained (nothing signed).
        RegistryError: no such version or run; the signature cannot be logged.
    """
    key = current_key()
    if key is None:
        raise BundleError(f"target {target.name!r} has no signing key: name one with `signing_key` (README: trust "
                          "model)")
    if run_id is not None:
        info = target.resolve_run(model, run_id)
    else:
        version, info = _version_run(target, model, version)
    with unchecked():  # read it unsigned: what is checked here are its checksums
        pack = target.open_pack(info)
        pack.verify()
    # The pack and its fallback's, each at its place in the run's artifacts.
    places = [(Path(pack.root), PackLayout.IN_RUN)]
    if pack.fallback is not None:
        places.append((Path(pack.fallback.root), f"{PackLayout.IN_RUN}/{PackLayout.FALLBACK}"))
    served = target.config.embedded_dir / "cache" / "serve" / info.run_id / PackLayout.MODEL
    for root, at in places:
        sign_pack(root, SIGNED, key)
        if local_path(info.artifact_uri) is None:  # the store's copy too, and a server's cached one
            target.tracker.log_file(info.run_id, root / SIGNATURE, at)
            cached = served / Path(at).relative_to(PackLayout.MODEL)
            if cached.is_dir():
                shutil.copyfile(root / SIGNATURE, cached / SIGNATURE)
    return SignOutcome(model, version if run_id is None else None, info.run_id, f"{key.key_id} ({key.source})",
                       len(places))
