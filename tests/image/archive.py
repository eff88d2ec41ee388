"""Reading a docker archive (``docker save``'s format, as hack/image/build.sh writes it) without an engine.

``manifest.json`` lists, per image, its config file, its ``RepoTags`` and its layer tars in order;
containerd's importer (behind ``ctr images import``, ``kind load image-archive`` and ``k3s ctr images
import``) reads exactly these, normalising each tag to a full reference. ``filesystem`` applies the
layers in order (``.wh.`` whiteouts delete) to give the files a container sees. Reading the archive
costs one pass over its ~200 MB.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    size: int
    mode: int
    kind: str  # "file", "dir", "link", "other"
    data: bytes | None  # kept for small files under the paths asked for


@dataclass(frozen=True)
class ArchiveImage:
    repo_tags: list[str]
    config: dict[str, Any]
    config_digest_ok: bool
    layer_sizes: list[int]  # uncompressed tar sizes: what a node stores unpacked
    files: dict[str, Entry]


def normalize_reference(ref: str) -> str:
    """A docker reference in full: ``lbspeaker:dev`` -> ``docker.io/library/lbspeaker:dev``."""
    name, tag = (ref.rsplit(":", 1) if ":" in ref.rsplit("/", 1)[-1] else (ref, "latest"))
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


def read(path: Path, keep_data_under: tuple[str, ...] = ()) -> ArchiveImage:
    """The single image of the archive at ``path``, its layers applied."""
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}

        def resolve(name: str) -> tarfile.TarInfo:
            member = members[name]
            if member.issym():  # a layer named twice: <id>/layer.tar -> ../<digest>.tar
                member = members[posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))]
            return member

        def blob(name: str) -> bytes:
            handle = tar.extractfile(resolve(name))
            assert handle is not None, name
            return handle.read()

        manifest = json.loads(blob("manifest.json"))
        if len(manifest) != 1:
            raise ValueError(f"{path}: {len(manifest)} images in manifest.json, expected 1")
        image = manifest[0]
        config_bytes = blob(image["Config"])
        digest_ok = hashlib.sha256(config_bytes).hexdigest() == Path(image["Config"]).stem
        files: dict[str, Entry] = {}
        sizes: list[int] = []
        for layer in image["Layers"]:
            member = resolve(layer)
            sizes.append(member.size)
            handle = tar.extractfile(member)
            assert handle is not None, layer
            with tarfile.open(fileobj=handle, mode="r|") as layer_tar:
                for item in layer_tar:
                    name = item.name.removeprefix("./").rstrip("/")
                    base = name.rsplit("/", 1)[-1]
                    parent = name.rsplit("/", 1)[0] if "/" in name else ""
                    if base == ".wh..wh..opq":
                        prefix = parent + "/"
                        for key in [k for k in files if k.startswith(prefix)]:
                            del files[key]
                        continue
                    if base.startswith(".wh."):
                        gone = (parent + "/" if parent else "") + base[4:]
                        for key in [k for k in files if k == gone or k.startswith(gone + "/")]:
                            del files[key]
                        continue
                    kind = ("file" if item.isfile() else "dir" if item.isdir()
                            else "link" if item.issym() or item.islnk() else "other")
                    data = None
                    if item.isfile() and keep_data_under and name.startswith(keep_data_under):
                        handle = layer_tar.extractfile(item)
                        data = handle.read() if handle is not None else None
                    files[name] = Entry(item.size if item.isfile() else 0, item.mode, kind, data)
    return ArchiveImage(list(image.get("RepoTags") or []), json.loads(config_bytes), digest_ok, sizes, files)
