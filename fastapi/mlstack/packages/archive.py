"""Zip archives from strangers: inspect the central directory, refuse anything unsafe, extract safely.

``inspect_zip`` reads only the central directory (no member is decompressed) and raises
:class:`PackageInvalid` listing every unsafe entry: path traversal (``..``), absolute or drive paths,
symlinks and other non-regular files (mode bits in ``external_attr``), encrypted or oddly compressed
members, duplicates, too many entries, and zip bombs (per-file and total uncompressed size, and the
uncompressed/compressed ratio per file and overall). ``extract_zip`` then writes the members into a
directory the caller owns, re-checking every path and counting the bytes actually decompressed, so a
lying header cannot get past the limits either.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlstack.packages.limits import PackageLimits
from mlstack.packages.problems import PackageInvalid

ALLOWED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
IGNORED_PREFIXES = ("__MACOSX/",)  # resource forks macOS adds; never extracted
IGNORED_NAMES = {".DS_Store"}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    name: str  # normalised relative POSIX path
    is_dir: bool
    size: int  # uncompressed, as declared
    compressed: int


@dataclass(frozen=True)
class ZipReport:
    entries: list[Entry]
    total_size: int
    archive_size: int

    @property
    def files(self) -> list[str]:
        return [e.name for e in self.entries if not e.is_dir]


def _mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{int(n)} bytes"


def check_name(raw: str) -> tuple[str | None, str | None]:
    """``(normalised name, None)`` for a safe relative path, ``(None, reason)`` otherwise."""
    if "\x00" in raw:
        return None, f"entry {raw!r}: NUL byte in the file name"
    name = raw.replace("\\", "/")  # a backslash is a separator for Windows tools: treat it as one
    if name.startswith("/") or _DRIVE.match(name):
        return None, f"entry {raw!r}: absolute path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, f"entry {raw!r}: path traversal ('..') outside the archive"
    if not parts:
        return None, f"entry {raw!r}: empty file name"
    return "/".join(parts), None


def _mode_problem(info: zipfile.ZipInfo) -> str | None:
    mode = (info.external_attr >> 16) & 0xFFFF
    if mode:  # Unix attributes (any tool that sets them, whatever create_system says)
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            return f"entry {info.filename!r}: symbolic link (links are not allowed)"
        if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return f"entry {info.filename!r}: special file (mode {oct(kind)}), only files and folders are allowed"
    return None


def inspect_zip(path: Path, limits: PackageLimits) -> ZipReport:
    """Check an archive's central directory against ``limits``; raise listing every problem."""
    archive_size = path.stat().st_size
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise PackageInvalid([f"not a valid zip archive ({e})"]) from None
    problems: list[str] = []
    entries: list[Entry] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise PackageInvalid([f"too many entries: {len(infos)} (at most {limits.max_entries})"])
        if not infos:
            raise PackageInvalid(["the zip archive is empty"])
        seen: set[str] = set()
        total = 0
        for info in infos:
            name, why = check_name(info.filename)
            if why:
                problems.append(why)
                continue
            assert name is not None
            if (why := _mode_problem(info)) is not None:
                problems.append(why)
                continue
            if info.flag_bits & 0x1:
                problems.append(f"entry {info.filename!r}: encrypted entries are not supported")
                continue
            if info.compress_type not in ALLOWED_METHODS:
                problems.append(f"entry {info.filename!r}: unsupported compression method {info.compress_type}")
                continue
            is_dir = info.is_dir()
            key = name + ("/" if is_dir else "")
            if key in seen:
                problems.append(f"entry {info.filename!r}: duplicate name")
                continue
            seen.add(key)
            if name.startswith(IGNORED_PREFIXES) or PurePosixPath(name).name in IGNORED_NAMES:
                continue
            total += info.file_size
            if info.file_size > limits.max_entry_bytes:
                problems.append(f"entry {info.filename!r}: {_mib(info.file_size)} uncompressed exceeds the "
                                f"per-file limit of {_mib(limits.max_entry_bytes)}")
            elif info.file_size >= limits.ratio_min_bytes and (
                    info.compress_size == 0 or info.file_size / info.compress_size > limits.max_ratio):
                ratio = info.file_size / info.compress_size if info.compress_size else float("inf")
                problems.append(f"entry {info.filename!r}: compression ratio {ratio:.0f}:1 exceeds "
                                f"{limits.max_ratio:g}:1 (zip bomb?)")
            entries.append(Entry(name, is_dir, info.file_size, info.compress_size))
        if total > limits.max_total_bytes:
            problems.append(f"total uncompressed size {_mib(total)} exceeds the limit of "
                            f"{_mib(limits.max_total_bytes)} (zip bomb?)")
        elif (total >= limits.ratio_min_bytes and total / max(archive_size, 1) > limits.max_ratio
              and not any("compression ratio" in p for p in problems)):  # many small bombs
            problems.append(f"overall compression ratio {total / max(archive_size, 1):.0f}:1 exceeds "
                            f"{limits.max_ratio:g}:1 (zip bomb?)")
    if problems:
        raise PackageInvalid(problems, "unsafe zip archive refused")
    return ZipReport(entries, total, archive_size)


def _inside(root: Path, target: Path) -> bool:
    return os.path.commonpath([root, target]) == str(root)


def extract_zip(path: Path, dest: Path, report: ZipReport, limits: PackageLimits) -> int:
    """Extract the entries ``inspect_zip`` accepted into the empty directory ``dest``.

    Paths are re-checked against ``dest``; files are created exclusively without following links;
    decompressed bytes are counted against the per-file and total limits as they are written.
    """
    root = dest.resolve()
    wanted = {e.name: e for e in report.entries}
    try:
        with zipfile.ZipFile(path) as zf:
            written = _extract_members(zf, root, wanted, limits)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        raise PackageInvalid([f"corrupt zip archive: {e}"]) from None
    except OSError as e:  # e.g. a file and a folder of the same name
        where = Path(e.filename or "").name
        raise PackageInvalid([f"cannot extract the archive: {e.strerror or e}: {where}"]) from None
    return written


def _extract_members(zf: zipfile.ZipFile, root: Path, wanted: dict[str, Entry], limits: PackageLimits) -> int:
    written = 0
    for info in zf.infolist():
        name, why = check_name(info.filename)
        if why or name not in wanted or _mode_problem(info):
            continue  # ignored (e.g. __MACOSX/); unsafe ones never reach here
        target = (root / name)
        if not _inside(root, Path(posixpath.normpath(str(target)))):
            raise PackageInvalid([f"entry {info.filename!r}: resolves outside the extraction directory"])
        if wanted[name].is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _inside(root, target.parent.resolve()):
            raise PackageInvalid([f"entry {info.filename!r}: resolves outside the extraction directory"])
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        size = 0
        with os.fdopen(fd, "wb") as out, zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                written += len(chunk)
                if size > limits.max_entry_bytes or size > info.file_size:
                    raise PackageInvalid([f"entry {info.filename!r}: more data than declared or allowed"])
                if written > limits.max_total_bytes:
                    raise PackageInvalid([f"total uncompressed size exceeds {_mib(limits.max_total_bytes)}"])
                out.write(chunk)
    return written
