"""Backup sources against the real Docker engine and the real restic binary."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import zstandard
from pydantic import TypeAdapter, ValidationError

from restoredrill.twins.sources import (
    BackupError,
    ImageArchiveSpec,
    ResticSpec,
    RestoreContext,
    RootfsTarSpec,
    SourceSpec,
)

TEST_LABEL = {"restoredrill.test": "1"}
PASSWORD = "s3cret-drill-pw"


# -- fixtures -----------------------------------------------------------------------


def busybox_tree(root: Path) -> Path:
    """A 2 MB root filesystem: static busybox and a link per applet."""
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.fail("busybox-static is needed (apt-get install busybox-static)")
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "tmp").mkdir()
    shutil.copy(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "marker").write_text("restored rootfs\n")
    return root


def tar_tree(root: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w") as tar:
        tar.add(root, arcname=".")
    return dest


def compress(src: Path, kind: str, dest: Path | None = None) -> Path:
    data = src.read_bytes()
    if kind == "gz":
        out, blob = dest or src.with_name(src.name + ".gz"), gzip.compress(data, 1)
    else:
        out, blob = (
            dest or src.with_name(src.name + ".zst"),
            zstandard.ZstdCompressor().compress(data),
        )
    out.write_bytes(blob)
    return out


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("busybox")
    return tar_tree(busybox_tree(tmp / "rootfs"), tmp / "busybox.tar")


@pytest.fixture
def tags(docker_client):
    """Unique image tags for one test; every one (and what carries the test label
    from it) is removed at the end."""
    made: list[str] = []

    def new(prefix: str = "run") -> str:
        made.append(f"restoredrill-test/{prefix}:{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield new
    for tag in made:
        with contextlib.suppress(Exception):  # not created by this test
            docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def archives(docker_client, busybox_tar, tmp_path_factory) -> dict:
    """``docker save`` archives (.tar, .tar.gz, .tar.zst, two images in one) of small
    images built FROM an imported busybox; the images are removed from the engine
    again, so every restore really loads."""
    tmp = tmp_path_factory.mktemp("archives")
    uid = uuid.uuid4().hex[:8]
    base = f"restoredrill-test/bb:{uid}"
    app, other = f"restoredrill-test/app:{uid}", f"restoredrill-test/other:{uid}"
    with busybox_tar.open("rb") as fh:
        docker_client.api.import_image(
            src=fh, repository=base.split(":")[0], tag=uid, changes=["LABEL restoredrill.test=1"]
        )
    try:
        for tag, text in ((app, "hello from the archive"), (other, "the other image")):
            dockerfile = f'FROM {base}\nCMD ["echo", "{text}"]\n'.encode()
            docker_client.images.build(
                fileobj=io.BytesIO(dockerfile),
                tag=tag,
                pull=False,
                rm=True,
                forcerm=True,
                labels=TEST_LABEL,
            )
        plain = tmp / "app.tar"
        with plain.open("wb") as out:
            for chunk in docker_client.images.get(app).save(named=True):
                out.write(chunk)
        multi = tmp / "multi.tar"
        subprocess.run(["docker", "save", "-o", str(multi), app, other], check=True)
    finally:
        for tag in (app, other, base):
            docker_client.images.remove(tag, force=True)
    return {
        "tar": plain,
        "tar.gz": compress(plain, "gz"),
        "tar.zst": compress(plain, "zst"),
        "multi": multi,
        "app": app,
        "other": other,
    }


def ctx(docker_client, tmp_path: Path, tag: str, **labels: str) -> RestoreContext:
    return RestoreContext(
        docker=docker_client,
        workdir=tmp_path / "work",
        image_tag=tag,
        labels={**TEST_LABEL, **labels},
    )


def run(docker_client, image: str, command=None) -> str:
    return (
        docker_client.containers.run(image, command, remove=True, labels=TEST_LABEL)
        .decode()
        .strip()
    )


# -- the registry -------------------------------------------------------------------


def test_registry_parses_each_kind_by_its_kind_key():
    adapter = TypeAdapter(SourceSpec)
    assert isinstance(
        adapter.validate_python({"kind": "image_archive", "path": "a.tar"}), ImageArchiveSpec
    )
    assert isinstance(
        adapter.validate_python({"kind": "rootfs_tar", "directory": "b", "pattern": "*.tar.zst"}),
        RootfsTarSpec,
    )
    spec = adapter.validate_python(
        {"kind": "restic", "repository": "r", "password_env": "PW", "restore": "rootfs"}
    )
    assert isinstance(spec, ResticSpec) and spec.restore_as == "rootfs"
    for bad in (
        {"kind": "image_archive", "path": "a", "directory": "b"},
        {"kind": "image_archive"},
        {"kind": "image_archive", "path": "a", "colour": "red"},
        {"kind": "restic", "repository": "r"},
        {"kind": "restic", "repository": "r", "password_env": "A", "password_file": "f"},
        {"kind": "tape", "path": "a"},
    ):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


# -- image_archive ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.zst"])
def test_image_archive_round_trip(docker_client, archives, tmp_path, tags, fmt):
    file = archives[fmt]
    spec = ImageArchiveSpec(path=file.name)
    ref = spec.locate(file.parent)
    assert ref.source == "image_archive" and ref.backup_id == file.name
    assert ref.location == str(file) and ref.size_bytes == file.stat().st_size
    assert abs(ref.created_at.timestamp() - file.stat().st_mtime) < 1

    tag = tags()
    restored = spec.restore(ref, ctx(docker_client, tmp_path, tag, **{"restoredrill.run": "r1"}))
    assert ref.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()  # from the restore's read
    assert restored.image == tag and restored.created_images == (tag,)
    assert run(docker_client, tag) == "hello from the archive"
    assert docker_client.images.get(tag).labels["restoredrill.run"] == "r1"
    # the archive's own tag never reaches the engine: nothing outside the run is touched
    assert not docker_client.images.list(name=archives["app"])


def test_image_archive_compression_is_detected_by_magic_bytes(
    docker_client, archives, tmp_path, tags
):
    misnamed = tmp_path / "app-backup.tar"  # zstd content behind a .tar name
    shutil.copy(archives["tar.zst"], misnamed)
    spec = ImageArchiveSpec(path=str(misnamed))
    tag = tags()
    spec.restore(spec.locate(tmp_path), ctx(docker_client, tmp_path, tag))
    assert run(docker_client, tag) == "hello from the archive"


def test_image_archive_multi_image_needs_image_field(docker_client, archives, tmp_path, tags):
    spec = ImageArchiveSpec(path=str(archives["multi"]))
    with pytest.raises(BackupError, match="holds 2 images.*name one with `image:`"):
        spec.restore(spec.locate(tmp_path), ctx(docker_client, tmp_path, tags()))
    spec = ImageArchiveSpec(path=str(archives["multi"]), image=archives["other"])
    tag = tags()
    spec.restore(spec.locate(tmp_path), ctx(docker_client, tmp_path, tag))
    assert run(docker_client, tag) == "the other image"
    with pytest.raises(BackupError, match="not in archive"):
        ImageArchiveSpec(path=str(archives["multi"]), image="nope:1").restore(
            spec.locate(tmp_path), ctx(docker_client, tmp_path, tags())
        )


def test_newest_matching_backup_is_taken(archives, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    now = time.time()
    for age, name in (
        (300, "hmi-1.tar.zst"),
        (100, "hmi-3.tar.zst"),
        (200, "hmi-2.tar.zst"),
        (0, "notes.txt"),
    ):
        shutil.copy(archives["tar.zst"], folder / name)
        os.utime(folder / name, (now - age, now - age))
    ref = ImageArchiveSpec(directory="backups", pattern="hmi-*.tar.zst").locate(tmp_path)
    assert ref.backup_id == "hmi-3.tar.zst"
    with pytest.raises(BackupError, match="no backup matches 'plc-\\*'"):
        ImageArchiveSpec(directory="backups", pattern="plc-*").locate(tmp_path)
    with pytest.raises(BackupError, match="backup directory not found"):
        ImageArchiveSpec(directory="nowhere").locate(tmp_path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(src: Path, dest: Path) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) * 2 // 3])
    return dest


def _no_manifest(tmp_path: Path, dest: Path) -> Path:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc" / "hostname").write_text("plc1\n")
    with tarfile.open(dest, "w") as tar:
        tar.add(tmp_path / "etc", arcname="etc")
    return dest


BROKEN = {
    "empty": (lambda a, t: _write(t / "empty.tar", b""), "empty file"),
    "text named .tar": (
        lambda a, t: _write(t / "notes.tar", b"this is not an archive\n" * 50),
        "not a tar archive",
    ),
    "truncated .tar.gz": (
        lambda a, t: _truncated(a["tar.gz"], t / "cut.tar.gz"),
        "truncated: gzip stream ended early",
    ),
    "truncated .tar.zst": (
        lambda a, t: _truncated(a["tar.zst"], t / "cut.tar.zst"),
        "truncated: zstd stream ended early",
    ),
    "truncated .tar": (lambda a, t: _truncated(a["tar"], t / "cut.tar"), "truncated: tar"),
    "tar without manifest": (
        lambda a, t: _no_manifest(t, t / "etc.tar"),
        "not a docker save archive: no manifest.json",
    ),
    "corrupt .tar.gz": (
        lambda a, t: _write(t / "bad.tar.gz", b"\x1f\x8b\x08\x00" + os.urandom(4096)),
        "corrupt gzip data|unreadable",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_image_archive_broken_backups_fail_with_the_reason(
    docker_client, archives, tmp_path, tags, case
):
    make, reason = BROKEN[case]
    file = make(archives, tmp_path)
    spec = ImageArchiveSpec(path=str(file))
    tag = tags()
    with pytest.raises(BackupError, match=reason) as err:
        spec.restore(spec.locate(tmp_path), ctx(docker_client, tmp_path, tag))
    assert str(file) in str(err.value)
    assert not docker_client.images.list(name=tag)


def test_image_archive_missing_file_and_changed_file(archives, docker_client, tmp_path, tags):
    with pytest.raises(BackupError, match="backup file not found") as err:
        ImageArchiveSpec(path="gone.tar").locate(tmp_path)
    assert str(tmp_path / "gone.tar") in str(err.value)
    file = tmp_path / "app.tar"
    shutil.copy(archives["tar"], file)
    spec = ImageArchiveSpec(path="app.tar")
    ref = spec.locate(tmp_path)
    with file.open("ab") as fh:
        fh.write(b"\0" * 1024)
    with pytest.raises(BackupError, match="changed since it was located"):
        spec.restore(ref, ctx(docker_client, tmp_path, tags()))


# -- rootfs_tar ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "tar.zst"])
def test_rootfs_tar_round_trip(docker_client, busybox_tar, tmp_path, tags, fmt):
    file = (
        busybox_tar if fmt == "tar" else compress(busybox_tar, "zst", tmp_path / "rootfs.tar.zst")
    )
    spec = RootfsTarSpec(path=str(file))
    ref = spec.locate(tmp_path)
    assert ref.source == "rootfs_tar"
    tag = tags()
    restored = spec.restore(ref, ctx(docker_client, tmp_path, tag, **{"restoredrill.run": "r2"}))
    assert ref.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()  # from the restore's read
    assert restored.image == tag and restored.created_images == (tag,)
    assert run(docker_client, tag, ["cat", "/etc/marker"]) == "restored rootfs"
    labels = docker_client.images.get(tag).labels
    assert labels["restoredrill.run"] == "r2" and labels["restoredrill.source"] == "rootfs_tar"


def test_rootfs_tar_rejects_broken_and_wrong_kind(
    docker_client, busybox_tar, archives, tmp_path, tags
):
    cut = _truncated(
        compress(busybox_tar, "gz", tmp_path / "rootfs.tar.gz"), tmp_path / "cut.tar.gz"
    )
    for file, reason in (
        (cut, "truncated: gzip stream ended early"),
        (archives["tar"], "docker save archive, not a root filesystem"),
    ):
        spec = RootfsTarSpec(path=str(file))
        tag = tags()
        with pytest.raises(BackupError, match=reason):
            spec.restore(spec.locate(tmp_path), ctx(docker_client, tmp_path, tag))
        assert not docker_client.images.list(name=tag)


# -- restic -------------------------------------------------------------------------


def restic(repo: Path, *args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD}
    done = subprocess.run(
        ["restic", "--no-cache", "-r", str(repo), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def restic_repo(restic_bin, tmp_path_factory) -> dict:
    """A repository with two snapshots of a historian's data (v1 then v2) and one of
    a busybox root filesystem."""
    import json

    tmp = tmp_path_factory.mktemp("restic")
    repo, data = tmp / "repo", tmp / "historian"
    restic(repo, "init")
    data.mkdir()
    (data / "db").mkdir()
    (data / "db" / "tags.csv").write_text("tag,value\nTT101,21.5\n")
    (data / "version").write_text("v1\n")
    first = json.loads(
        restic(
            repo, "backup", "--json", "--host", "hist1", "--tag", "nightly", str(data)
        ).splitlines()[-1]
    )
    time.sleep(1.1)
    (data / "version").write_text("v2\n")
    second = json.loads(
        restic(
            repo, "backup", "--json", "--host", "hist1", "--tag", "nightly", str(data)
        ).splitlines()[-1]
    )
    root = busybox_tree(tmp / "rootfs")
    restic(repo, "backup", "--host", "hmi1", ".", cwd=root)  # paths: [<root>]
    (tmp / "password").write_text(PASSWORD + "\n")
    return {
        "repo": repo,
        "data": data,
        "v1": first["snapshot_id"],
        "v2": second["snapshot_id"],
        "dir": tmp,
    }


def test_restic_latest_restores_data(restic_repo, docker_client, tmp_path, monkeypatch):
    monkeypatch.setenv("DRILL_RESTIC_PW", PASSWORD)
    spec = ResticSpec(
        repository="repo", host="hist1", tags=["nightly"], password_env="DRILL_RESTIC_PW"
    )
    ref = spec.locate(restic_repo["dir"])
    assert ref.source == "restic" and ref.backup_id == restic_repo["v2"][:8]
    assert ref.location.startswith(f"{restic_repo['repo']}#{restic_repo['v2']}")
    assert ref.size_bytes and ref.size_bytes > 0 and ref.created_at.tzinfo is not None
    restored = spec.restore(ref, ctx(docker_client, tmp_path, "unused"))
    assert restored.image is None and restored.directory is not None
    assert (restored.directory / "version").read_text() == "v2\n"
    assert (restored.directory / "db" / "tags.csv").read_text().startswith("tag,value")
    assert restored.directory.is_relative_to(tmp_path / "work")


def test_restic_snapshot_by_id_with_password_file(restic_repo, docker_client, tmp_path):
    spec = ResticSpec(repository="repo", snapshot=restic_repo["v1"][:6], password_file="password")
    ref = spec.locate(restic_repo["dir"])
    assert ref.backup_id == restic_repo["v1"][:8]
    restored = spec.restore(ref, ctx(docker_client, tmp_path, "unused"))
    assert (restored.directory / "version").read_text() == "v1\n"


def test_restic_rootfs_restore_runs_as_an_image(restic_repo, docker_client, tmp_path, tags):
    spec = ResticSpec(repository="repo", host="hmi1", password_file="password", restore="rootfs")
    ref = spec.locate(restic_repo["dir"])
    tag = tags()
    restored = spec.restore(ref, ctx(docker_client, tmp_path, tag, **{"restoredrill.run": "r3"}))
    assert restored.image == tag and restored.created_images == (tag,)
    assert run(docker_client, tag, ["cat", "/etc/marker"]) == "restored rootfs"
    assert docker_client.images.get(tag).labels["restoredrill.run"] == "r3"
    assert not any((tmp_path / "work").iterdir())  # the restored tree is gone, the image has it


def test_restic_errors_are_clear_and_keep_the_password_secret(restic_repo, tmp_path, monkeypatch):
    base = restic_repo["dir"]
    monkeypatch.setenv("DRILL_RESTIC_PW", "not-the-password")
    cases = [
        (ResticSpec(repository="repo", password_env="DRILL_RESTIC_PW"), "wrong restic password"),
        (ResticSpec(repository="repo", password_env="UNSET_DRILL_PW"), "UNSET_DRILL_PW is not set"),
        (
            ResticSpec(repository="repo", snapshot="deadbeef", password_file="password"),
            "snapshot 'deadbeef' not found",
        ),
        (
            ResticSpec(repository="repo", host="nohost", password_file="password"),
            "no snapshot matching host=nohost",
        ),
        (ResticSpec(repository="missing", password_file="password"), "restic repository not found"),
        (ResticSpec(repository=".", password_file="password"), "not a restic repository"),
        (ResticSpec(repository="repo", password_file="nofile"), "cannot read restic password file"),
    ]
    for spec, reason in cases:
        with pytest.raises(BackupError, match=reason) as err:
            spec.locate(base)
        assert PASSWORD not in str(err.value) and "not-the-password" not in str(err.value)


def test_restic_not_installed(restic_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="restic is not installed"):
        ResticSpec(repository="repo", password_file="password").locate(restic_repo["dir"])
