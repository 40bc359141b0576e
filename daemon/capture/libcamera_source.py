"""A camera through libcamera's own Python bindings (Debian's ``python3-libcamera``).

``camera.source: libcamera`` chooses it, and the ``picamera2`` source falls back to it where picamera2 cannot be
imported (PyPI's picamera2 on Debian: its preview module needs Raspberry Pi OS's ``pykms``). Imported only then.

Frames are time-stamped by the camera (its SensorTimestamp, on the clock of ``time.monotonic()``). A camera that
completes each request as soon as it is queued (libcamera's virtual camera) is paced by camera_timing.FramePacer:
requests are then queued one at a time, a frame period apart.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import select
import struct
import time
from typing import Any, Optional

import numpy as np
from fallwatch.daemon.capture.camera_timing import FramePacer, sensor_time
from fallwatch.daemon.capture.source import Source, SourceError

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 2.0  # a read that gets no frame in this long fails (three in a row reopen the camera)
BUFFER_COUNT = 4
# linux/dma-buf.h: DMA_BUF_IOCTL_SYNC = _IOW('b', 0, struct dma_buf_sync { __u64 flags; })
DMA_BUF_IOCTL_SYNC = 0x40086200
DMA_BUF_SYNC_READ, DMA_BUF_SYNC_START, DMA_BUF_SYNC_END = 1, 0, 4


def import_libcamera() -> Any:
    try:
        import libcamera
    except Exception as exc:  # ImportError, or the binding failing to load its library
        raise SourceError(
            f"camera.source libcamera: libcamera's Python bindings cannot be imported ({exc}); install "
            f"python3-libcamera and create the venv with --system-site-packages"
        ) from None
    return libcamera


def to_bgr(cv2: Any, fmt: str, planes: list[np.ndarray], width: int, height: int, stride: int) -> np.ndarray:
    """A BGR image from the planes of one frame. libcamera names packed RGB formats by their order in a
    little-endian word, so its "RGB888" is stored B, G, R: what OpenCV calls BGR."""
    data = planes[0] if len(planes) == 1 else np.concatenate(planes)
    if fmt in ("RGB888", "BGR888"):
        image = data[: height * stride].reshape(height, stride)[:, : width * 3].reshape(height, width, 3)
        return image.copy() if fmt == "RGB888" else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if fmt in ("XRGB8888", "XBGR8888"):
        image = data[: height * stride].reshape(height, stride)[:, : width * 4].reshape(height, width, 4)
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR if fmt == "XRGB8888" else cv2.COLOR_RGBA2BGR)
    if fmt in ("NV12", "NV21", "YUV420", "YVU420"):
        # Y then chroma at half height: OpenCV converts the (3/2 height) x stride image once the padding is cut.
        image = data[: height * 3 // 2 * stride].reshape(height * 3 // 2, stride)[:, :width]
        code = {
            "NV12": cv2.COLOR_YUV2BGR_NV12,
            "NV21": cv2.COLOR_YUV2BGR_NV21,
            "YUV420": cv2.COLOR_YUV2BGR_I420,
            "YVU420": cv2.COLOR_YUV2BGR_YV12,
        }[fmt]
        if fmt in ("YUV420", "YVU420") and stride != width:
            raise ValueError(f"{fmt} with padded rows (stride {stride}, width {width}) is not supported")
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    if fmt in ("YUYV", "UYVY"):
        image = data[: height * stride].reshape(height, stride)[:, : width * 2].reshape(height, width, 2)
        return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_YUYV if fmt == "YUYV" else cv2.COLOR_YUV2BGR_UYVY)
    raise ValueError(f"pixel format {fmt} is not supported")


SUPPORTED_FORMATS = ("RGB888", "BGR888", "XRGB8888", "XBGR8888", "NV12", "NV21", "YUV420", "YVU420", "YUYV", "UYVY")


def _dma_sync(fd: int, flags: int) -> None:
    """Tell the kernel the CPU reads the buffer now (caches), as libcamera's own MappedFrameBuffer users do."""
    try:
        fcntl.ioctl(fd, DMA_BUF_IOCTL_SYNC, struct.pack("Q", flags | DMA_BUF_SYNC_READ))
    except OSError:
        pass  # not a DMA-BUF (nothing to sync)


class LibcameraSource(Source):
    """The first camera libcamera lists, streaming ``width`` x ``height`` frames, newest first, as BGR."""

    name = "libcamera"

    def __init__(self, width: int, height: int, fps: float, controls: dict[str, Any]):
        self.width, self.height = width, height
        self.fps = float(fps)
        self.controls = controls
        self.cam: Any = None
        self.id = ""
        self.format = ""
        self.pacer = FramePacer(fps, "libcamera camera")
        self._free: list[Any] = []  # completed requests not queued again yet (paced)
        self._maps: list[mmap.mmap] = []

    def open(self) -> None:
        lc = import_libcamera()
        cm = lc.CameraManager.singleton()
        if not cm.cameras:
            raise OSError("libcamera sees no camera")
        cam = cm.cameras[0]
        cam.acquire()
        try:
            self._configure(lc, cam)
            self._start(lc, cam)
        except BaseException:
            self._unmap()
            try:
                cam.release()
            except Exception:
                pass
            raise
        self.cam, self.id = cam, cam.id
        self.pacer.camera = f"libcamera camera {cam.id}"
        self.cm = cm

    def describe(self) -> str:
        if self.cam is None:
            return "libcamera camera (not open)"
        w, h = self.size
        return f"libcamera camera {self.id} ({w}x{h} {self.format}, {self.fps:g} fps asked)"

    def _configure(self, lc: Any, cam: Any) -> None:
        config = cam.generate_configuration([lc.StreamRole.VideoRecording])
        stream_config = config.at(0)
        stream_config.size = lc.Size(self.width, self.height)
        stream_config.pixel_format = lc.PixelFormat("RGB888")  # no conversion; a camera may adjust it
        stream_config.buffer_count = BUFFER_COUNT
        if config.validate() == lc.CameraConfiguration.Status.Invalid:
            raise OSError(f"libcamera camera {cam.id} refuses every {self.width}x{self.height} configuration")
        self.format = str(stream_config.pixel_format)
        if self.format not in SUPPORTED_FORMATS:
            raise OSError(f"libcamera camera {cam.id} delivers {self.format}, which fallwatch cannot convert")
        cam.configure(config)
        self.stream = stream_config.stream
        self.size = (stream_config.size.width, stream_config.size.height)
        self.stride = stream_config.stride
        if self.size != (self.width, self.height):
            log.info("libcamera camera %s: %dx%d instead of %dx%d", cam.id, *self.size, self.width, self.height)
        # Buffers from libcamera's own allocator (a DMA-BUF heap, else /dev/udmabuf): a kernel with neither
        # cannot stream, and says so here (ENOBUFS).
        try:
            self.allocator = lc.FrameBufferAllocator(cam)
            self.allocator.allocate(self.stream)
        except RuntimeError as exc:  # (pybind11's std::system_error)
            raise OSError(
                f"libcamera cannot allocate frame buffers ({exc}): this kernel offers libcamera no DMA-BUF "
                f"(no /dev/dma_heap/*, no /dev/udmabuf)"
            ) from None
        self.requests = []
        self.planes = {}
        for i, buffer in enumerate(self.allocator.buffers(self.stream)):
            request = cam.create_request(i)
            request.add_buffer(self.stream, buffer)
            self.requests.append(request)
            self.planes[i] = self._map(buffer)

    def _map(self, buffer: Any) -> list[tuple[int, np.ndarray]]:
        """(fd, bytes) of each plane; planes that share a file descriptor share one mapping."""
        spans: dict[int, int] = {}
        for plane in buffer.planes:
            spans[plane.fd] = max(spans.get(plane.fd, 0), plane.offset + plane.length)
        maps = {}
        for fd, length in spans.items():
            maps[fd] = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
            self._maps.append(maps[fd])
        return [(p.fd, np.frombuffer(maps[p.fd], np.uint8, count=p.length, offset=p.offset)) for p in buffer.planes]

    def _start(self, lc: Any, cam: Any) -> None:
        advertised = {control.name: control for control in cam.controls}
        controls = {advertised[name]: value for name, value in self.controls.items() if name in advertised}
        ignored = sorted(set(self.controls) - set(advertised))
        if ignored:
            log.info("libcamera camera %s has no control %s; not set", cam.id, ", ".join(ignored))
        cam.start(controls)
        for request in self.requests:
            cam.queue_request(request)
        self._free = []
        self.pacer.reset()

    @property
    def paced(self) -> bool:
        """The camera ignores FrameDurationLimits: requests go one at a time, 1/fps apart."""
        return self.pacer.paced

    def read(self) -> Optional[tuple[np.ndarray, float]]:
        if self.pacer.wait() and self._free:
            self._queue(self._free.pop(0))
        done = self._completed(READ_TIMEOUT_S)
        if not done:
            return None
        newest = done[-1]
        t = self._stamp(newest)
        self.pacer.saw(t, self._stamp(done[-2]) if len(done) > 1 else None)
        for request in done[:-1]:
            self._recycle(request)
        try:
            image = self._image(newest.cookie)
        finally:
            self._recycle(newest)
        return image, t

    @staticmethod
    def _stamp(request: Any) -> float:
        """When the frame was captured, in seconds on the clock of time.monotonic() (libcamera's is
        CLOCK_MONOTONIC too): the request's SensorTimestamp (the virtual camera of libcamera 0.4 sets only that),
        else the buffer's time stamp."""
        t = sensor_time({control.name: value for control, value in request.metadata.items()})
        if t is not None:
            return t
        (buffer,) = request.buffers.values()  # (one stream)
        return float(buffer.metadata.timestamp) / 1e9

    def _completed(self, timeout: float) -> list[Any]:
        """The requests completed since the last call, oldest first; waits up to ``timeout`` for one."""
        lc = import_libcamera()
        deadline = time.monotonic() + timeout
        while True:
            ready = self.cm.get_ready_requests()
            if ready:
                good = []
                for request in ready:
                    if request.status == lc.Request.Status.Complete:
                        good.append(request)
                    else:
                        self._recycle(request)
                if good:
                    return good
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            select.select([self.cm.event_fd], [], [], left)

    def _image(self, index: int) -> np.ndarray:
        import cv2

        planes = self.planes[index]
        for fd, _ in planes:
            _dma_sync(fd, DMA_BUF_SYNC_START)
        try:
            return to_bgr(cv2, self.format, [data for _, data in planes], *self.size, self.stride)
        finally:
            for fd, _ in planes:
                _dma_sync(fd, DMA_BUF_SYNC_END)

    def _recycle(self, request: Any) -> None:
        """Back to the camera at once, or (paced) when the next frame is due."""
        if self.paced:
            self._free.append(request)
        else:
            self._queue(request)

    def _queue(self, request: Any) -> None:
        request.reuse()
        self.cam.queue_request(request)

    def close(self) -> None:
        if self.cam is None:
            return
        cam, self.cam = self.cam, None
        try:
            cam.stop()
            self.cm.get_ready_requests()  # the cancelled ones
        finally:
            self.requests, self._free, self.planes = [], [], {}
            self.allocator = None
            self._unmap()
            cam.release()

    def _unmap(self) -> None:
        for m in self._maps:
            try:
                m.close()
            except BufferError:
                pass  # a frame still refers to it; it goes with the frame
        self._maps = []
