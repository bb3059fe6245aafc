"""A bundle's manifest: its format version, the sha256 of every file it names, and the
tokenizers it ships. A damaged bundle is refused with a message naming the file."""

from __future__ import annotations

import hashlib
import json
import os

from serving.tokenizers import load_vocabulary

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle_dir: str, verify: bool = True) -> dict:
    """Reads `manifest.json` and checks the format version and every file's sha256."""
    path = os.path.join(bundle_dir, MANIFEST)
    if not os.path.exists(path):
        raise BundleError(f"{path}: manifest is missing; is {bundle_dir} a bundle directory?")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except ValueError as error:
        raise BundleError(f"{path}: not valid JSON ({error})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is not supported (this translator reads {FORMAT_VERSION})"
        )
    if verify:
        files = manifest.get("files", {})
        used = [manifest.get("tokenizers", {}).get(side) for side in ("source", "target")]
        for models in manifest.get("models", {}).values():
            used += list(models.values()) if isinstance(models, dict) else []
        for name in used:
            if name is not None and name not in files:
                raise BundleError(f"{path}: {name} is used but has no sha256 in the manifest")
        for name, entry in files.items():
            file_path = os.path.join(bundle_dir, name)
            if not os.path.exists(file_path):
                raise BundleError(f"{file_path}: named in the manifest but missing")
            if sha256_of(file_path) != entry["sha256"]:
                raise BundleError(f"{file_path}: sha256 does not match the manifest (damaged or changed)")
    return manifest


def load_bundle_vocabulary(path: str):
    """The tokenizer file at `path`; a `BundleError` naming it when it is missing or unreadable."""
    if not os.path.exists(path):
        raise BundleError(f"{path}: named in the manifest but missing")
    try:
        return load_vocabulary(path)
    except Exception as error:
        raise BundleError(f"{path}: cannot read this tokenizer ({type(error).__name__}: {error})") from None
