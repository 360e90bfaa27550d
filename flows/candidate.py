"""The two configurations a regression compares, on disk: the baseline and the candidate.

``--candidate DIR``: DIR mirrors the site's folder; each file it holds replaces the
site's (or is added). ``--git-base REF``: the site's files at REF (read with git) are
the baseline, the working tree (untracked files included) the candidate.

One side is always the site as it is on disk; the other is a *mirror* of it in a
scratch folder: the same tree, made of links to the real files, with the changed files
put in their place (and files absent on that side left out). Every path the site names
then resolves as it would in the real tree, backups included, without copying them.
Folders laid into twins (``run.files``) are copied for real in the mirror, so a link
made by the mirror is never mistaken for a link of the configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from restoredrill.errors import InputError

from .changes import ChangedFile, relative

SKIPPED = {".git", ".restoredrill", "__pycache__"}
"""Folders of a candidate that are never configuration."""
LINK = 0o120000
"""The mode git gives a symbolic link."""
BIG = 256 * 1024 * 1024
"""A file this large is linked, never copied, when a hard link is not possible."""


class RegressInputError(InputError):
    """Bad input to ``regress`` (exit 2); ``problems`` lists every one, in words."""

    headline = ""  # each problem names its file and line

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class Configurations:
    """The baseline's and the candidate's site files, each in its tree, and what differs."""

    site: Path
    """The site file as given."""
    baseline: Path
    candidate: Path
    baseline_root: Path
    candidate_root: Path
    changed: list[ChangedFile]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    """Candidate entries left out, and why (outside the candidate, not a file)."""
    revisions: dict[str, Any] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    """``{"candidate": DIR}`` or ``{"git_base": REF}``."""
    mirror: Mirror | None = None
    shown: Callable[[str], str] = str
    """Rewrites paths of the mirror in a message into the paths a user knows."""

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.remove()

    def __enter__(self) -> Configurations:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the mirror


class Mirror:
    """``dest`` mirrors ``source`` by links; :meth:`put` puts a file in place of one."""

    def __init__(self, source: Path, dest: Path) -> None:
        self.source = source
        self.dest = dest
        self._real: set[PurePosixPath] = set()
        self._placed: set[PurePosixPath] = set()
        dest.mkdir(parents=True)
        self._realize(PurePosixPath("."))

    def path(self, rel: str | PurePosixPath) -> Path:
        return self.dest / str(rel)

    def _realize(self, rel: PurePosixPath) -> Path:
        """Make ``rel`` a real folder whose entries link to the source's (ancestors first)."""
        target = self.dest / str(rel)
        if rel in self._real:
            return target
        if str(rel) != ".":
            self._realize(rel.parent)
            if target.is_symlink():
                target.unlink()
            target.mkdir(exist_ok=True)
        origin = self.source / str(rel)
        if origin.is_dir():
            for entry in os.scandir(origin):
                link = target / entry.name
                if not os.path.lexists(link) and PurePosixPath(rel, entry.name) not in self._placed:
                    link.symlink_to(origin / entry.name)
        self._real.add(rel)
        return target

    def put(self, rel: str, content: bytes | Path | None, mode: int | None = None) -> None:
        """Put ``content`` (bytes, or a file of this host) at ``rel``; None: leave it out."""
        path = PurePosixPath(rel)
        folder = self._realize(path.parent)
        target = folder / path.name
        self._placed.add(path)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        if content is None:
            return
        if isinstance(content, bytes) and mode == LINK:
            target.symlink_to(os.fsdecode(content))  # a link as git keeps it: its target
        elif isinstance(content, bytes):
            target.write_bytes(content)
            if mode is not None:
                target.chmod(mode)
        else:
            _place(content, target)

    def copy_folder(self, rel: str) -> None:
        """Make folder ``rel`` real all the way down: files copied (or hard-linked), the
        configuration's own links kept as links, files put in place kept."""
        path = PurePosixPath(rel)
        origin = self.source / rel
        if not origin.is_dir() and not self.path(rel).is_dir():
            return
        folder = self._realize(path)
        for entry in sorted(os.listdir(folder)):
            sub = PurePosixPath(path, entry)
            if sub in self._placed:
                continue
            mine = folder / entry
            real = origin / entry
            if real.is_symlink():
                mine.unlink()
                mine.symlink_to(os.readlink(real))
            elif real.is_dir():
                self.copy_folder(str(sub))
            elif real.is_file():
                mine.unlink()
                _place(real, mine)

    def remove(self) -> None:
        """Remove the mirror and its scratch folder (links are removed, never followed)."""
        shutil.rmtree(self.dest.parent, ignore_errors=True)


def _place(origin: Path, target: Path) -> None:
    """``origin`` at ``target``: hard-linked, else copied, else (a big file) linked."""
    try:
        os.link(origin.resolve(), target)
    except OSError:
        if origin.stat().st_size <= BIG:
            shutil.copy2(origin, target)
        else:
            target.symlink_to(origin.resolve())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _scratch(name: str) -> Path:
    """A scratch folder with an owner file: a killed regression's is reaped by the next run."""
    from restoredrill.twins import scratch

    return scratch.create(f"{name}-{os.urandom(3).hex()}")


def common_root(paths: Iterable[Path]) -> Path:
    return Path(os.path.commonpath([str(p) for p in paths]))


def _shown_by(mirror: Mirror, name: Callable[[str], str]) -> Callable[[str], str]:
    """Rewrite ``<mirror>/REL`` in a text into ``name(REL)``."""
    pattern = re.compile(re.escape(str(mirror.dest)) + r"/([^\s:'\"]+)")
    return lambda text: pattern.sub(lambda m: name(m.group(1)), text)


# --------------------------------------------------------------------------- --candidate


def from_candidate(
    site: Path, candidate: Path, reach: Iterable[str] = (), name: str = "regress"
) -> Configurations:
    """The site as it is (baseline) and the site with ``candidate``'s files (candidate).

    ``reach``: paths the site names relative to its folder (``../shared/map.yaml``): the
    mirror starts high enough to hold them. ``name``: of the mirror's scratch folder.
    """
    site = site.absolute()
    folder = site.parent
    files, ignored = _candidate_files(_checked_candidate(site, candidate))
    root = common_root([folder, *_reached(folder, reach)])
    changed = _candidate_changes(files, folder, root, ignored)
    mirror = Mirror(root, _scratch(f"{name}-candidate") / "tree")
    placed = {c.path for c in changed}
    for rel, path in files.items():
        mine = relative(root, folder, rel) or rel
        if mine in placed:
            mirror.put(mine, path)
    site_rel = relative(root, folder, site.name) or site.name
    if site_rel not in placed:
        mirror.put(site_rel, site.read_bytes())

    def user_path(rel: str) -> str:
        inside = os.path.relpath(root / rel, folder)
        return str(candidate / inside) if inside in files else str(root / rel)

    return Configurations(
        site=site,
        baseline=site,
        candidate=mirror.path(site_rel),
        baseline_root=root,
        candidate_root=mirror.dest,
        changed=changed,
        ignored=ignored,
        revisions=_revisions_of(folder),
        source={"candidate": str(candidate)},
        mirror=mirror,
        shown=_shown_by(mirror, user_path),
    )


def _checked_candidate(site: Path, candidate: Path) -> Path:
    """The candidate folder, resolved, once the site file and it are usable."""
    if not site.is_file():
        raise RegressInputError(f"{site}: no such site file")
    if not candidate.is_dir():
        raise RegressInputError(f"--candidate {candidate}: not a folder")
    cand = candidate.resolve()
    if cand == site.parent.resolve():
        raise RegressInputError(
            f"--candidate {candidate} is the site's own folder: give a folder that holds "
            "only the changed files, at the paths they have in the site"
        )
    return cand


def _candidate_changes(
    files: dict[str, Path], folder: Path, root: Path, ignored: list[tuple[str, str]]
) -> list[ChangedFile]:
    """The candidate's files that differ from the site's (``ignored`` gets those that
    stand where the site has a folder)."""
    changed: list[ChangedFile] = []
    for rel, path in sorted(files.items()):
        mine = relative(root, folder, rel) or rel
        old = folder / rel
        new_digest = sha256(path)
        if old.is_file():
            old_digest = sha256(old)
            if old_digest != new_digest:
                changed.append(ChangedFile(mine, "modified", old_digest, new_digest))
        elif old.exists():
            ignored.append((rel, f"the site has a folder at {rel}"))
        else:
            changed.append(ChangedFile(mine, "added", None, new_digest))
    return changed


def _candidate_files(candidate: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """The candidate's files by path relative to it; entries left out, and why."""
    files: dict[str, Path] = {}
    ignored: list[tuple[str, str]] = []
    for here, dirs, names in os.walk(candidate):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for n in sorted(names):
            path = Path(here) / n
            rel = path.relative_to(candidate).as_posix()
            real = path.resolve()
            if not real.is_relative_to(candidate):
                ignored.append((rel, f"a link to {real}, outside the candidate"))
            elif not real.is_file():
                ignored.append((rel, "not a regular file"))
            else:
                files[rel] = path
        for d in list(dirs):
            if (Path(here) / d).is_symlink():
                ignored.append(
                    ((Path(here) / d).relative_to(candidate).as_posix(), "a linked folder")
                )
                dirs.remove(d)
    return files, ignored


def _reached(folder: Path, reach: Iterable[str]) -> list[Path]:
    return [Path(os.path.normpath(folder / r)).parent for r in reach]


def _revisions_of(folder: Path) -> dict[str, Any]:
    """The git revision of the site's folder, if it is in a git work tree."""
    try:
        top = _git(folder, "rev-parse", "--show-toplevel").strip()
        head = _git(folder, "rev-parse", "HEAD").strip()
    except RegressInputError:
        return {}
    dirty = bool(_git(folder, "status", "--porcelain", "--untracked-files=no").strip())
    return {"repository": top, "head": head, "dirty": dirty}


# --------------------------------------------------------------------------- --git-base


def _git(cwd: Path, *args: str, binary: bool = False) -> Any:
    """Run git in ``cwd``; RegressInputError with git's own words if it fails."""
    git = shutil.which("git")
    if git is None:
        raise RegressInputError(
            "--git-base needs git, which is not installed (apt-get install git)"
        )
    proc = subprocess.run(
        [git, "-c", "core.quotepath=off", *args], cwd=cwd, capture_output=True, timeout=120
    )
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RegressInputError(f"git {' '.join(args)}: {why[-1] if why else 'failed'}")
    return proc.stdout if binary else proc.stdout.decode(errors="replace")


def from_git(
    site: Path, ref: str, reach: Iterable[str] = (), name: str = "regress"
) -> Configurations:
    """The site's files at ``ref`` (baseline) and the working tree (candidate)."""
    site = site.absolute()
    if not site.is_file():
        raise RegressInputError(f"{site}: no such site file")
    folder = site.parent
    top, base = _git_base(folder, ref)
    top_abs = Path(os.path.realpath(top))
    folder_in_top = Path(os.path.realpath(folder))
    site_in_repo = (folder_in_top / site.name).relative_to(top_abs).as_posix()
    entries = _git_changes(top_abs, base)
    root = common_root([top_abs, *_reached(folder_in_top, reach)])
    prefix = top_abs.relative_to(root).as_posix()

    def at_root(rel: str) -> str:
        return rel if prefix == "." else f"{prefix}/{rel}"

    try:
        _git(top_abs, "cat-file", "-e", f"{base}:{site_in_repo}")
    except RegressInputError:
        raise RegressInputError(
            f"--git-base {ref}: the site file {site_in_repo} did not exist at {ref} "
            "(nothing to compare with)"
        ) from None
    mirror = Mirror(root, _scratch(f"{name}-baseline") / "tree")
    changed = _git_changed(top_abs, base, entries, at_root, mirror)
    if not any(c.path == at_root(site_in_repo) for c in changed):
        mirror.put(at_root(site_in_repo), site.read_bytes())
    head = _git(top_abs, "rev-parse", "HEAD").strip()
    dirty = bool(_git(top_abs, "status", "--porcelain").strip())

    def user_path(rel: str) -> str:
        inside = os.path.relpath(root / rel, top_abs)
        return f"{ref}:{inside}" if not inside.startswith("..") else str(root / rel)

    return Configurations(
        site=site,
        baseline=mirror.path(at_root(site_in_repo)),
        candidate=folder_in_top / site.name,
        baseline_root=mirror.dest,
        candidate_root=root,
        changed=changed,
        revisions={"repository": str(top_abs), "base": base, "base_ref": ref, "head": head,
                   "dirty": dirty},
        source={"git_base": ref},
        mirror=mirror,
        shown=_shown_by(mirror, user_path),
    )  # fmt: skip


def _git_base(folder: Path, ref: str) -> tuple[Path, str]:
    """The work tree holding ``folder`` and the commit ``ref`` names in it."""
    try:
        top = Path(_git(folder, "rev-parse", "--show-toplevel").strip())
    except RegressInputError:
        raise RegressInputError(
            f"--git-base: {folder} is not in a git work tree (run regress inside a clone of "
            "the configuration repository, or use --candidate DIR)"
        ) from None
    try:
        base = _git(
            top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
        )
    except RegressInputError:
        raise RegressInputError(
            f"--git-base {ref}: no such revision in {top} (a branch, tag or commit; in CI "
            "fetch it first, e.g. git fetch origin main)"
        ) from None
    return top, base.strip()


def _git_changed(
    top: Path,
    base: str,
    entries: list[tuple[str, str]],
    at_root: Callable[[str], str],
    mirror: Mirror,
) -> list[ChangedFile]:
    """The files whose content differs from ``base``; each one's ``base`` side put in
    ``mirror`` (with its mode)."""
    changed: list[ChangedFile] = []
    modes = _modes(top, base, [rel for rel, status in entries if status != "added"])
    for rel, status in entries:
        work = top / rel
        if work.is_symlink():  # git keeps a link's target text; so is it compared
            new = hashlib.sha256(os.fsencode(os.readlink(work))).hexdigest()
        else:
            new = sha256(work) if status != "deleted" and work.is_file() else None
        old_bytes = (
            None
            if status == "added"
            else _git(top, "cat-file", "blob", f"{base}:{rel}", binary=True)
        )
        old = hashlib.sha256(old_bytes).hexdigest() if old_bytes is not None else None
        if old == new:
            continue
        changed.append(ChangedFile(at_root(rel), status, old, new))
        mirror.put(at_root(rel), old_bytes, modes.get(rel))
    return changed


def _git_changes(top: Path, base: str) -> list[tuple[str, str]]:
    """(path, status) of every file that differs between ``base`` and the working tree."""
    out: dict[str, str] = {}
    raw = _git(top, "diff", "--name-status", "--no-renames", "-z", base, "--")
    parts = [p for p in raw.split("\0") if p]
    for status, path in zip(parts[0::2], parts[1::2], strict=True):
        out[path] = {"A": "added", "D": "deleted"}.get(status[0], "modified")
    for path in _git(top, "ls-files", "-z", "--others", "--exclude-standard").split("\0"):
        if path and not set(PurePosixPath(path).parts) & SKIPPED:
            out[path] = "added"
    return sorted(out.items())


def _modes(top: Path, base: str, paths: list[str]) -> dict[str, int]:
    """The file modes git kept at ``base`` (0755 for executables, LINK for links)."""
    if not paths:
        return {}
    out = {}
    raw = _git(top, "ls-tree", "-z", base, "--", *paths)
    for item in raw.split("\0"):
        if item:
            meta, _, path = item.partition("\t")
            kind = meta.split()[0]
            out[path] = LINK if kind == "120000" else 0o755 if kind == "100755" else 0o644
    return out


def copy_run_folders(configs: Configurations, folders: Iterable[str]) -> None:
    """Make the mirror's copies of folders laid into twins real (see the module docs)."""
    if configs.mirror is None:
        return
    for rel in folders:
        with contextlib.suppress(OSError):
            configs.mirror.copy_folder(rel)
