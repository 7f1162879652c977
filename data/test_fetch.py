"""data/fetch.py: files verified by hash, corrupt or truncated ones repaired from the kept archive, a corrupt
archive refused offline with a message naming it; and the real data folder intact (``make data`` ran)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

import fetch

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
LICENCE = b"MIT License\n"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_packages(data_dir: Path, manifest_dir: Path) -> Path:
    """A wheel and an sdist in ``data_dir/packages`` (as after a first run) and a manifest pinning them."""
    packages = data_dir / "packages"
    packages.mkdir(parents=True)
    wheel = packages / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo/data/map.png", PAYLOAD)
        z.writestr("demo-1.0.dist-info/licenses/LICENSE", LICENCE)
    sdist = packages / "other-2.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        info = tarfile.TarInfo("other-2.0/src/other/data/scene.tif")
        info.size = len(PAYLOAD[::-1])
        t.addfile(info, io.BytesIO(PAYLOAD[::-1]))
    (manifest_dir / "map.pgw").write_bytes(b"0.1\n0\n0\n-0.1\n0\n0\n")
    manifest = {
        "packages": [
            {
                "name": "demo",
                "version": "1.0",
                "form": "wheel",
                "archive": wheel.name,
                "sha256": sha(wheel.read_bytes()),
                "files": [
                    {"member": "demo/data/map.png", "name": "imagery/map.png", "sha256": sha(PAYLOAD)},
                    {
                        "member": "demo-1.0.dist-info/licenses/LICENSE",
                        "name": "imagery/LICENSE.demo",
                        "sha256": sha(LICENCE),
                    },
                ],
            },
            {
                "name": "other",
                "version": "2.0",
                "form": "sdist",
                "archive": sdist.name,
                "sha256": sha(sdist.read_bytes()),
                "files": [
                    {
                        "member": "other-2.0/src/other/data/scene.tif",
                        "name": "imagery/scene.tif",
                        "sha256": sha(PAYLOAD[::-1]),
                    }
                ],
            },
        ],
        "repository_files": [
            {
                "source": "map.pgw",
                "name": "imagery/map.pgw",
                "sha256": sha((manifest_dir / "map.pgw").read_bytes()),
            }
        ],
    }
    path = manifest_dir / "imagery.json"
    path.write_text(json.dumps(manifest))
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    data_dir, manifest_dir = tmp_path / "data", tmp_path / "repo"
    manifest_dir.mkdir()
    return data_dir, make_packages(data_dir, manifest_dir)


def test_first_run_extracts_then_second_only_verifies(folders: tuple[Path, Path]) -> None:
    data_dir, manifest = folders
    first = fetch.fetch(data_dir, manifest, offline=True)
    assert (first.written, first.verified, first.downloaded_bytes) == (4, 0, 0)
    assert (data_dir / "imagery/map.png").read_bytes() == PAYLOAD
    assert (data_dir / "imagery/scene.tif").read_bytes() == PAYLOAD[::-1]
    assert (data_dir / "imagery/LICENSE.demo").read_bytes() == LICENCE
    second = fetch.fetch(data_dir, manifest, offline=True)
    assert (second.written, second.verified) == (0, 4)
    assert not list(data_dir.rglob("*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_file_is_found_by_its_hash_and_extracted_again(
    folders: tuple[Path, Path], damage: str
) -> None:
    data_dir, manifest = folders
    fetch.fetch(data_dir, manifest, offline=True)
    target = data_dir / "imagery/scene.tif"
    if damage == "truncate":
        target.write_bytes(PAYLOAD[::-1][:1000])
    elif damage == "flip":
        b = bytearray(PAYLOAD[::-1])
        b[5000] ^= 1
        target.write_bytes(bytes(b))
    else:
        target.unlink()
    report = fetch.fetch(data_dir, manifest, offline=True)
    assert report.written == 1 and report.verified == 3
    assert target.read_bytes() == PAYLOAD[::-1]


def test_a_corrupt_archive_is_refused_offline_naming_it(folders: tuple[Path, Path], capsys) -> None:
    data_dir, manifest = folders
    fetch.fetch(data_dir, manifest, offline=True)
    (data_dir / "imagery/map.png").write_bytes(b"not a png")
    wheel = data_dir / "packages/demo-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes()[:200])
    assert fetch.main(["--data-dir", str(data_dir), "--manifest", str(manifest), "--offline"]) == 1
    err = capsys.readouterr().err
    assert str(wheel) in err and "--offline" in err and "demo==1.0" in err, err
    # The damaged file was not replaced by anything unverified.
    assert (data_dir / "imagery/map.png").read_bytes() == b"not a png"


def test_an_archive_whose_member_differs_from_its_pin_is_refused(folders: tuple[Path, Path]) -> None:
    data_dir, manifest = folders
    spec = json.loads(manifest.read_text())
    spec["packages"][0]["files"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(spec))
    with pytest.raises(fetch.DataError, match="demo 1.0: demo/data/map.png: sha256 .* expected 0000"):
        fetch.fetch(data_dir, manifest, offline=True)
    assert not (data_dir / "imagery/map.png").exists()


def test_the_data_folder_is_intact() -> None:
    """The real pins against the real data folder (``make test`` runs ``make data`` first): all intact."""
    report = fetch.fetch(fetch.default_data_dir(), fetch.MANIFEST, offline=True)
    assert report.written == 0, f"make data did not leave an intact data folder in {fetch.default_data_dir()}"
    pinned = json.loads(fetch.MANIFEST.read_text())
    n = sum(len(p["files"]) for p in pinned["packages"]) + len(pinned["repository_files"])
    assert report.verified == n
