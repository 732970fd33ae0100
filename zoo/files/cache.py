"""The download cache: files a weight set or evaluation set names by URL, fetched once.

Where: ``$ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``;
each file at ``<cache>/<sha256>/<name>``. A download is streamed into a
temporary file beside its place, hashed on the way, capped at the size its
entry declares, and placed with a hard link (never over anything) only once
its length and sha256 match: a wrong checksum, a truncated or oversized
download, an HTTP error or Ctrl-C leaves nothing in the cache. Only
``https://`` is fetched, ``http://`` only from a loopback address (redirects
are held to the same rule). A cached file is hashed again before each use.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from zoo.errors import DownloadError, UsageError
from zoo.progress import stage
from zoo.spec.weights import is_loopback
from zoo.text import human_bytes

CACHE_ENV = "ZOO_CACHE_DIR"
CHUNK = 1 << 16
TIMEOUT_S = 30.0  # per socket operation: a stalled server ends the download
_ENTRY = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoo"


@dataclass(frozen=True)
class CachedFile:
    path: Path
    sha256: str
    bytes: int


def cached_files(root: Path | None = None) -> list[CachedFile]:
    """What the cache holds: files zoo placed (``<sha256>/<name>``), nothing else."""
    root = cache_dir() if root is None else root
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (_ENTRY.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()):
            continue
        for file in sorted(folder.iterdir()):
            if file.is_file() and not file.is_symlink() and not file.name.startswith("."):
                found.append(CachedFile(file, folder.name, file.stat().st_size))
    return found


def remove_cached(entry: CachedFile) -> None:
    """Remove one cached file (and its folder, once empty)."""
    entry.path.unlink(missing_ok=True)
    try:
        entry.path.parent.rmdir()
    except OSError:
        pass  # another file, or a download in progress, is still there


def cache_path(sha256: str, file_name: str) -> Path:
    return cache_dir() / sha256 / file_name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, sha256: str, size: int, file_name: str, what: str) -> Path:
    """The cached copy of ``url``, downloaded first if needed; ``what`` names the entry in errors."""
    target = cache_path(sha256, file_name)
    if target.is_file() and not target.is_symlink():
        if target.stat().st_size == size and sha256_file(target) == sha256:
            return target
        target.unlink()  # changed since it was placed: fetch it again
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the download cache {str(target.parent)!r} ({exc.strerror or exc}); set {CACHE_ENV}") from exc
    temp = target.parent / f".{file_name}.{os.getpid()}.part"
    try:
        download(url, temp, sha256, size, what)
        try:
            os.link(temp, target)  # never over a file another process placed meanwhile
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
        try:
            target.parent.rmdir()  # only when nothing was placed
        except OSError:
            pass
    return target


def download(url: str, temp: Path, sha256: str, size: int, what: str) -> None:
    """Stream ``url`` into ``temp``; a ``DownloadError`` unless it is exactly ``size`` bytes with ``sha256``."""
    import http.client  # here: urllib loads ssl, which no command needs until it downloads
    import urllib.error
    import urllib.request

    check_url(url, what)
    opener = urllib.request.build_opener(safe_redirects(what))
    digest = hashlib.sha256()
    got = 0
    started = time.monotonic()
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response, open(temp, "wb") as out:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > size:
                raise DownloadError(f"{what}: {url} sends {int(declared):,} bytes, over the {size:,} its entry declares; nothing was cached")
            while chunk := response.read(min(CHUNK, size + 1 - got)):
                got += len(chunk)
                if got > size:
                    raise DownloadError(f"{what}: {url} sent more than the {size:,} bytes its entry declares; nothing was cached")
                digest.update(chunk)
                out.write(chunk)
                stage(f"downloading {what}: {human_bytes(got)} of {human_bytes(size)}")
    except http.client.HTTPException as exc:  # IncompleteRead, a malformed answer
        raise DownloadError(f"{what}: the download of {url} broke off ({type(exc).__name__}); nothing was cached, run again") from None
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{what}: {url} answered HTTP {exc.code} {exc.reason}; nothing was cached") from None
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, (ConnectionError, TimeoutError)):
            raise DownloadError(f"{what}: writing {str(temp.parent)!r} failed ({exc.strerror or exc}); set {CACHE_ENV}") from None
        cause = getattr(exc, "reason", exc)
        raise DownloadError(f"{what}: cannot download {url} ({cause}); check the address and your network") from None
    if got < size:
        raise DownloadError(f"{what}: the download of {url} is truncated: {got:,} of {size:,} bytes; nothing was cached, run again")
    if digest.hexdigest() != sha256:
        raise DownloadError(
            f"{what}: {url} has sha256 {digest.hexdigest()[:16]}…, not the {sha256[:16]}… its entry pins; "
            "nothing was cached (the file changed or was tampered with: tell the plugin's authors)"
        )
    stage(f"downloaded {what} in {time.monotonic() - started:.1f}s")


def check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or "")):
        return
    raise DownloadError(f"{what}: refused to fetch {url}: only https:// (or http:// to a loopback address)")


def safe_redirects(what: str) -> object:
    """A redirect handler that follows a redirect only to an address ``check_url`` allows."""
    import urllib.request

    class SafeRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN202 - urllib's signature
            check_url(newurl, what)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return SafeRedirect()


def clear(entries: list[CachedFile]) -> int:
    """Remove ``entries``; the bytes freed."""
    freed = 0
    for entry in entries:
        remove_cached(entry)
        freed += entry.bytes
    return freed
