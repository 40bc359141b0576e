"""TFLite interpreters: LiteRT (``ai_edge_litert``) or ``tflite_runtime``, on the Edge TPU or the CPU (XNNPACK).

An ``*_edgetpu.tflite`` holds a custom op only the Edge TPU delegate can run, so it is never handed to a CPU
interpreter: :func:`make_cpu_interpreter` refuses it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from . import edgetpu_stack
from .edgetpu_stack import EDGETPU_LIBRARY

log = logging.getLogger(__name__)


class BackendError(Exception):
    """The requested inference backend cannot be used. The message is one line for the user."""


def _import_runtime(for_edgetpu: bool = False) -> tuple[Any, Callable[..., Any], str]:
    """(Interpreter class, load_delegate function, runtime module name). The CPU prefers LiteRT; Edge TPU models
    prefer tflite_runtime, the runtime `install.sh --with-coral` installs as the match of its libedgetpu."""
    order = ("tflite_runtime", "ai_edge_litert") if for_edgetpu else ("ai_edge_litert", "tflite_runtime")
    for module in order:
        try:
            interpreter = importlib.import_module(f"{module}.interpreter")
        except ImportError:
            continue
        return interpreter.Interpreter, interpreter.load_delegate, module
    raise BackendError("no TFLite runtime: install ai-edge-litert (or tflite-runtime)")


def runtime_label(for_edgetpu: bool = False) -> str:
    """The runtime (module and version) that runs CPU or Edge TPU models here, e.g. "LiteRT 2.3.0"."""
    try:
        return edgetpu_stack.runtime_label(_import_runtime(for_edgetpu)[2])
    except BackendError:
        return "no TFLite runtime"


def is_edgetpu_model(path: Path) -> bool:
    return Path(path).name.endswith("_edgetpu.tflite")


def default_threads(num_threads: Optional[int]) -> int:
    return int(num_threads) if num_threads else (os.cpu_count() or 1)


def make_cpu_interpreter(path: Path, num_threads: Optional[int] = None) -> Any:
    """A CPU (XNNPACK) interpreter with tensors allocated. Refuses Edge TPU builds."""
    if is_edgetpu_model(path):
        raise BackendError(
            f"{Path(path).name} is compiled for the Edge TPU and cannot run on the CPU; use its CPU twin"
        )
    interpreter_cls, _, _ = _import_runtime()
    try:
        with _native_stderr_filtered():
            interp = interpreter_cls(model_path=str(path), num_threads=default_threads(num_threads))
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise BackendError(f"cannot load model {path}: {str(e).splitlines()[0] if str(e) else e!r}") from e
    return interp


def load_edgetpu_delegate(device: str = "usb") -> Any:
    """Load the Edge TPU delegate, or BackendError saying why not (library missing, or no TPU answering)."""
    _, load_delegate, _ = _import_runtime(for_edgetpu=True)
    options = {"device": device} if device else {}
    # Look for the library first (by the loader's search path, without loading it): a failed load_delegate
    # leaves a half-built Delegate whose __del__ prints a traceback on some LiteRT versions.
    library = edgetpu_stack.find_library()
    if library is None:
        raise BackendError(f"Edge TPU library {EDGETPU_LIBRARY} not found")
    try:
        return load_delegate(str(library), options)
    except OSError as e:
        raise BackendError(f"Edge TPU library {library} not loadable ({_first_line(e)})") from e
    except ValueError as e:
        where = f" on device {device!r}" if device else ""
        raise BackendError(f"no Edge TPU answered{where} ({_first_line(e)})") from e


def make_edgetpu_interpreter(path: Path, delegate: Any, num_threads: Optional[int] = None) -> Any:
    interpreter_cls, _, _ = _import_runtime(for_edgetpu=True)
    try:
        interp = interpreter_cls(
            model_path=str(path), experimental_delegates=[delegate], num_threads=default_threads(num_threads)
        )
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise BackendError(f"cannot load {Path(path).name} on the Edge TPU ({_first_line(e)})") from e
    return interp


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Hold back the runtime's native "INFO: Created TensorFlow Lite XNNPACK delegate" line (it cannot be turned
    off and is noise in every command's output); anything else written to fd 2 meanwhile is passed on."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield  # no real stderr (e.g. captured by a test runner): nothing to filter
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if line.startswith("INFO: Created TensorFlow Lite"):
                    log.debug("%s", line)
                elif line.strip():
                    print(line, file=sys.stderr)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class Model:
    """One interpreter with cached tensor indices and invoke timing: the small common part of every adapter."""

    def __init__(self, interpreter: Any, path: Path, backend: str, runtime: str = ""):
        self.interpreter = interpreter
        self.path = Path(path)
        self.backend = backend
        self.runtime = runtime or runtime_label(for_edgetpu=backend == "edgetpu")  # e.g. "LiteRT 2.3.0"
        inp = interpreter.get_input_details()[0]
        self.input_index: int = inp["index"]
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in inp["shape"])
        self.input_dtype = inp["dtype"]
        self.input_quant: tuple[float, int] = inp.get("quantization", (0.0, 0))
        # Outputs ordered by tensor name so ``:1``, ``:2`` suffixes (detection post-process) come in order.
        self.outputs = sorted(interpreter.get_output_details(), key=lambda d: d["name"])
        self.last_invoke_ms = 0.0
        self.total_invoke_ms = 0.0  # since creation; the engine reads differences per frame
        self.invoke_count = 0

    def resize_input(self, shape: tuple[int, ...]) -> None:
        """For models with a dynamic input (MoveNet MultiPose)."""
        if tuple(shape) != self.input_shape:
            self.interpreter.resize_tensor_input(self.input_index, list(shape))
            self.interpreter.allocate_tensors()
            self.input_shape = tuple(shape)
            self.outputs = sorted(self.interpreter.get_output_details(), key=lambda d: d["name"])

    def output_where(self, test: Callable[[tuple[int, ...]], bool]) -> int:
        """The position (in name order) of the first output whose shape passes ``test``."""
        for i, d in enumerate(self.outputs):
            if test(tuple(int(v) for v in d["shape"])):
                return i
        raise ValueError(
            f"{self.path.name}: no output of the expected shape (have {[tuple(d['shape']) for d in self.outputs]})"
        )

    def run(self, tensor: np.ndarray, which: Optional[Sequence[int]] = None) -> list[np.ndarray]:
        """Set the input, invoke, return the outputs (copies, in name order), or only those in ``which``
        (BlazePose also returns a segmentation mask and heat maps nobody here reads)."""
        self.interpreter.set_tensor(self.input_index, tensor)
        t0 = time.perf_counter()
        self.interpreter.invoke()
        self.last_invoke_ms = (time.perf_counter() - t0) * 1000.0
        self.total_invoke_ms += self.last_invoke_ms
        self.invoke_count += 1
        outputs = self.outputs if which is None else [self.outputs[i] for i in which]
        return [self.interpreter.get_tensor(d["index"]) for d in outputs]
