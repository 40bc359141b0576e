"""Download registered models into the model directory, verified and installed atomically.

A download goes to a hidden temporary file in the model directory itself (so the final ``os.replace`` is an
atomic rename on one file system), is unpacked when the upstream is a zip archive, checked against the
registry's sha256 and only then renamed to its final name. Whatever goes wrong, no partial or unverified
file is left under the model's name, and the error is one line for the user.

Models without a published sha256 (``ModelSpec.sha256 is None``) are installed but reported as
"unpinned", with their computed sha256, so the user can compare it with a trusted source.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TextIO

from .models import MODELS, ModelError, ModelSpec, edgetpu_build, sha256_of

log = logging.getLogger(__name__)

# Mirrors and tests point downloads elsewhere: BASE/<upstream file name> replaces each upstream address.
BASE_URL_ENV = "FALLWATCH_MODEL_BASE_URL"

# Model status words, shared by `models list` and `models verify`.
OK, MISMATCH, UNPINNED, MISSING = "ok", "mismatch", "unpinned", "missing"

_CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    sha256: str
    pinned: bool  # False: no published sha256 to check against


def spec_for(name: str) -> ModelSpec:
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return spec


def model_status(spec: ModelSpec, model_dir: Path) -> str:
    """ok | mismatch | unpinned | missing, for the file of ``spec`` in ``model_dir``."""
    path = Path(model_dir) / spec.file
    if not path.is_file():
        return MISSING
    if spec.sha256 is None:
        return UNPINNED
    return OK if sha256_of(path) == spec.sha256 else MISMATCH


def download_url(spec: ModelSpec, base_url: Optional[str] = None) -> str:
    """The upstream address, or ``base_url`` (or $FALLWATCH_MODEL_BASE_URL) + the upstream file name."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    if not base:
        return spec.url
    upstream_name = Path(urllib.parse.urlsplit(spec.url).path).name
    return base.rstrip("/") + "/" + upstream_name


def fetch_model(
    name: str, model_dir: Path, base_url: Optional[str] = None, timeout: float = 60.0, progress: Optional[TextIO] = None
) -> FetchResult:
    """Download, verify and install one model; ModelError (one line) on any failure.

    ``progress`` receives human progress text (the CLI passes stderr); None keeps quiet.
    """
    spec = spec_for(name)
    model_dir = Path(model_dir)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create model directory {model_dir}: {exc.strerror or exc}") from None
    url = download_url(spec, base_url)
    target = model_dir / spec.file
    temps: list[Path] = []
    try:
        download = _temp_file(model_dir, spec.file, temps)
        _download(url, download, name, timeout, progress, target)
        if spec.archive_member:
            payload = _temp_file(model_dir, spec.file, temps)
            _extract_member(download, spec.archive_member, payload, url)
        else:
            payload = download
        _check_tflite(payload, spec, url)
        digest = sha256_of(payload)
        if spec.sha256 is not None and digest != spec.sha256:
            raise ModelError(
                f"{name}: sha256 mismatch for {url}: expected {spec.sha256}, got {digest}; the download was discarded"
            )
        # mkstemp makes 0600 files; the daemon may run as another user (systemd DynamicUser) than whoever
        # fetched, and a model is no secret.
        os.chmod(payload, 0o644)
        os.replace(payload, target)  # atomic: same directory, same file system
        temps.remove(payload)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    if spec.sha256 is None:
        log.warning("%s has no published sha256; installed with sha256 %s", name, digest)
    return FetchResult(name, target, digest, spec.sha256 is not None)


def _temp_file(model_dir: Path, file: str, temps: list[Path]) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{file}.", suffix=".part", dir=model_dir)
    except OSError as exc:
        raise ModelError(f"cannot write in model directory {model_dir}: {exc.strerror or exc}") from None
    os.close(fd)
    temps.append(Path(tmp))
    return Path(tmp)


def _download(url: str, dest: Path, name: str, timeout: float, progress: Optional[TextIO], target: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "fallwatch-models/1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            report = _progress_reporter(name, total, progress)
            done = 0
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                report(done, False)
            out.flush()
            os.fsync(out.fileno())  # the rename must not land before the bytes (power loss on a Pi)
            report(done, True)
            if total and done != total:
                raise ModelError(f"cannot download {name} from {url}: connection closed after {done} of {total} bytes")
    except urllib.error.HTTPError as exc:
        raise ModelError(f"cannot download {name} from {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise ModelError(
            f"cannot download {name} from {url}: {reason} (is this machine offline? fetch it "
            f"elsewhere and copy it to {target})"
        ) from None
    except (socket.timeout, TimeoutError):
        raise ModelError(f"cannot download {name} from {url}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ModelError(f"cannot download {name} from {url}: {exc.strerror or exc}") from None


def _progress_reporter(name: str, total: int, stream: Optional[TextIO]) -> Callable[[int, bool], None]:
    """On a terminal, one line rewritten in place; elsewhere (logs, CI) a line at most every 25%."""
    if stream is None:
        return lambda done, final: None
    tty = hasattr(stream, "isatty") and stream.isatty()
    state = {"last": 0.0, "quarter": -1}

    def report(done: int, final: bool) -> None:
        text = (
            f"{name}: {done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total}%)"
            if total
            else f"{name}: {done / 1e6:.1f} MB"
        )
        if tty:
            now = time.monotonic()
            if final or now - state["last"] > 0.2:
                state["last"] = now
                stream.write("\r" + text + ("\n" if final else ""))
                stream.flush()
        else:
            quarter = 4 * done // total if total else 0
            if final or quarter > state["quarter"]:
                state["quarter"] = quarter
                if final or quarter < 4:
                    stream.write(text + "\n")
                    stream.flush()

    return report


def _extract_member(archive: Path, member: str, dest: Path, url: str) -> None:
    """Copy ``member`` (matched by its base name anywhere in the archive) out of a zip file."""
    try:
        with zipfile.ZipFile(archive) as zf:
            matches = [i for i in zf.infolist() if not i.is_dir() and Path(i.filename).name == member]
            if not matches:
                raise ModelError(f"{url}: the archive holds no {member}")
            with zf.open(matches[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
    except zipfile.BadZipFile:
        raise ModelError(f"{url}: the download is not a valid zip archive") from None


def _check_tflite(path: Path, spec: ModelSpec, url: str) -> None:
    """A .tflite file carries the FlatBuffer identifier TFL3; catches HTML error pages for unpinned models."""
    if not spec.file.endswith(".tflite"):
        return
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise ModelError(
            f"{spec.name}: {url} did not return a TFLite model (got {path.stat().st_size} bytes "
            f"starting {head[:8]!r}); the download was discarded"
        )


def configured_models(detector: str, estimator: str, backend: str = "auto") -> tuple[list[str], list[str]]:
    """(required, tpu): the models a configuration cannot run without, and the Edge TPU builds the engine prefers
    when a TPU answers. The CPU models are always required (they are the fallback); the TPU builds are required
    only with backend edgetpu, and not wanted at all with backend cpu."""
    required = [detector, estimator]
    tpu = [b for b in map(edgetpu_build, required) if b] if backend != "cpu" else []
    if backend == "edgetpu":
        return required + tpu, []
    return required, tpu
