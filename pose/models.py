"""The catalogue of supported models, and where to find them on disk: adding a model is one entry here.

Each entry names its file, sha256, upstream address, kind, input size and keypoint topology; every Edge TPU build
names its CPU twin, because an ``*_edgetpu.tflite`` cannot run on the CPU. Everything else reads this catalogue:
the config schema (which names each role accepts), the engine (the adapter registered for the entry's kind in
``DETECTORS``/``ESTIMATORS``), the Edge TPU probe (how to compare a TPU build with its CPU twin), ``fetch`` and the
``models`` command. Standard library only: config imports this module when it loads.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

# Pinned to the commit the published sha256 values were taken at, so an upstream change cannot break them.
CORAL = "https://raw.githubusercontent.com/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41/"
MEDIAPIPE = "https://storage.googleapis.com/mediapipe-assets/"


Role = Literal["detector", "estimator"]
# How the Edge TPU probe compares a TPU build's outputs with its CPU twin's (pose/edgetpu_probe.py compare):
# keypoints (17 x (y, x, score)), detections (SSD boxes, classes, scores, count) or outputs (each within a share
# of its range, for models without a specific rule).
ProbeCompare = Literal["keypoints", "detections", "outputs"]


@dataclass(frozen=True)
class Kind:
    """A model family: the role it plays in the engine and how the probe checks it. Its adapter is registered
    under the same key in ``DETECTORS`` (pose/detector.py) or ``ESTIMATORS`` (pose/estimator.py)."""

    role: Role
    probe_compare: ProbeCompare


KINDS: dict[str, Kind] = {
    "detector": Kind("detector", "detections"),  # SSD with its postprocess op
    "multipose": Kind("detector", "outputs"),  # MoveNet MultiPose: people with their keypoints
    "blazepose_detector": Kind("detector", "outputs"),
    "estimator": Kind("estimator", "keypoints"),  # MoveNet single pose
    "blazepose_landmark": Kind("estimator", "outputs"),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    sha256: Optional[str]
    url: str
    kind: str  # a key of KINDS
    input_size: tuple[int, int]  # width, height
    keypoints: str  # "coco17" | "blazepose33" | "none"
    edgetpu: bool = False
    cpu_twin: Optional[str] = None  # registry name of the CPU build of an Edge TPU model
    archive_member: Optional[str] = None  # the file inside a zip download
    # the Edge TPU build that replaces this CPU model on a TPU when that build's own cpu_twin is another file
    edgetpu_stand_in: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model {self.name}: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")

    @property
    def role(self) -> Role:
        return KINDS[self.kind].role

    @property
    def probe_compare(self) -> ProbeCompare:
        return KINDS[self.kind].probe_compare


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec(
            "movenet_lightning",
            "movenet_single_pose_lightning_ptq.tflite",
            "cd7cc22fa946e5d146a7b98d496853e1923e22828d3972d579973f27f91bb105",
            CORAL + "movenet_single_pose_lightning_ptq.tflite",
            "estimator",
            (192, 192),
            "coco17",
        ),
        ModelSpec(
            "movenet_lightning_edgetpu",
            "movenet_single_pose_lightning_ptq_edgetpu.tflite",
            "25c88b77586f65c5c80d868c0555fb194f2b38c0b55aa491f4a93b7d7da58e78",
            CORAL + "movenet_single_pose_lightning_ptq_edgetpu.tflite",
            "estimator",
            (192, 192),
            "coco17",
            edgetpu=True,
            cpu_twin="movenet_lightning",
        ),
        ModelSpec(
            "ssd_mobilenet_v1",
            "ssd_mobilenet_v1_coco_quant_detect.tflite",
            "e4b118e5e4531945de2e659742c7c590f7536f8d0ed26d135abcfe83b4779d13",
            "https://storage.googleapis.com/download.tensorflow.org/models/tflite/"
            "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip",
            "detector",
            (300, 300),
            "none",
            archive_member="detect.tflite",
            # the TF model zoo's SSD MobileNet v1 quant is the network Coral compiled for the TPU
            edgetpu_stand_in="ssd_mobilenet_v1_edgetpu",
        ),
        ModelSpec(
            "movenet_multipose",
            "movenet_multipose_lightning_float16.tflite",
            "d4489f89e6bd6777a8b9a1a16189832131f84ff90d82fae729e670b84d7948dd",
            "https://storage.googleapis.com/tfhub-lite-models/google/lite-model/movenet/multipose/"
            "lightning/tflite/float16/1.tflite",
            "multipose",
            (256, 256),
            "coco17",
        ),
        ModelSpec(
            "blazepose_detector",
            "mediapipe_pose_detection.tflite",
            "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
            MEDIAPIPE + "pose_detection.tflite",
            "blazepose_detector",
            (224, 224),
            "none",
        ),
        ModelSpec(
            "blazepose_full",
            "mediapipe_pose_landmark_full.tflite",
            "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
            MEDIAPIPE + "pose_landmark_full.tflite",
            "blazepose_landmark",
            (256, 256),
            "blazepose33",
        ),
        # Downloadable by users; not in ../shared. sha256 filled in where a published value is known.
        ModelSpec(
            "movenet_thunder",
            "movenet_single_pose_thunder_ptq.tflite",
            None,
            CORAL + "movenet_single_pose_thunder_ptq.tflite",
            "estimator",
            (256, 256),
            "coco17",
        ),
        ModelSpec(
            "movenet_thunder_edgetpu",
            "movenet_single_pose_thunder_ptq_edgetpu.tflite",
            None,
            CORAL + "movenet_single_pose_thunder_ptq_edgetpu.tflite",
            "estimator",
            (256, 256),
            "coco17",
            edgetpu=True,
            cpu_twin="movenet_thunder",
        ),
        # sha256 as pinned (with its size, 6938269 bytes) by a public download script found by code search
        # (prototype_vision model fetcher; no second source found).
        ModelSpec(
            "ssd_mobilenet_v1_coral",
            "ssd_mobilenet_v1_coco_quant_postprocess.tflite",
            "020d9f0a3e8b84e13cb1dbe70a756ef4dd5884bfc50e77f43c7bac84e791dd9d",
            CORAL + "ssd_mobilenet_v1_coco_quant_postprocess.tflite",
            "detector",
            (300, 300),
            "none",
        ),
        ModelSpec(
            "ssd_mobilenet_v1_edgetpu",
            "ssd_mobilenet_v1_coco_quant_postprocess_edgetpu.tflite",
            None,
            CORAL + "ssd_mobilenet_v1_coco_quant_postprocess_edgetpu.tflite",
            "detector",
            (300, 300),
            "none",
            edgetpu=True,
            cpu_twin="ssd_mobilenet_v1_coral",
        ),
        # sha256 published by several unrelated public repos that vendor or pin this file (a "turret"
        # scripts/download_models.py with size 6220797, and READMEs of an RTSP detector citing test_data).
        ModelSpec(
            "ssd_mobilenet_v2",
            "ssd_mobilenet_v2_coco_quant_postprocess.tflite",
            "42fb3d70ffb7bb37dd518f730f7be784b831c2078f30c497d0019cc2e987fa26",
            CORAL + "ssd_mobilenet_v2_coco_quant_postprocess.tflite",
            "detector",
            (300, 300),
            "none",
        ),
        # sha256 pinned by public scripts/Dockerfiles fetching google-coral/test_data at commit
        # 104342d2d3480b3e66203073dac24f4e2dbb4c41 (the commit ../shared's Coral files come from).
        ModelSpec(
            "ssd_mobilenet_v2_edgetpu",
            "ssd_mobilenet_v2_coco_quant_postprocess_edgetpu.tflite",
            "b94e2d58222c32f31062c7604e10488e2aba9259ab77462039476a3ba4597fef",
            CORAL + "ssd_mobilenet_v2_coco_quant_postprocess_edgetpu.tflite",
            "detector",
            (300, 300),
            "none",
            edgetpu=True,
            cpu_twin="ssd_mobilenet_v2",
        ),
        # BlazePose lite/heavy: sha256 and generation as pinned by MediaPipe itself in
        # google-ai-edge/mediapipe third_party/external_files.bzl (commit 23b98e56); the same file pins the
        # full model and pose_detection with the hashes of the ../shared copies above.
        ModelSpec(
            "blazepose_lite",
            "mediapipe_pose_landmark_lite.tflite",
            "1150dc68a713b80660b90ef46ce4e85c1c781bb88b6e3512cc64e6a685ba5588",
            MEDIAPIPE + "pose_landmark_lite.tflite?generation=1681244252454799",
            "blazepose_landmark",
            (256, 256),
            "blazepose33",
        ),
        ModelSpec(
            "blazepose_heavy",
            "mediapipe_pose_landmark_heavy.tflite",
            "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe",
            MEDIAPIPE + "pose_landmark_heavy.tflite?generation=1661875897944151",
            "blazepose_landmark",
            (256, 256),
            "blazepose33",
        ),
        # No published sha256 was found for MoveNet Thunder (CPU, Edge TPU) nor Coral's SSD v1 Edge TPU build:
        # they stay sha256=None ("unpinned"). `fallwatch models fetch` still installs them (a user who asks for
        # Thunder should get it), but prints the computed sha256 with a warning, and `models verify/list` show
        # them as "unpinned" rather than "ok", so nobody mistakes them for checked files.
    ]
}


def edgetpu_build(name: str) -> Optional[str]:
    """The registry name of the Edge TPU build that replaces CPU model ``name`` on a TPU, if any."""
    stand_in = MODELS[name].edgetpu_stand_in if name in MODELS else None
    if stand_in in MODELS:
        return stand_in
    for spec in MODELS.values():
        if spec.edgetpu and spec.cpu_twin == name:
            return spec.name
    return None


def cpu_models(role: Role) -> tuple[str, ...]:
    """The names a configuration may give for ``role`` (pose.detector, pose.estimator), sorted: CPU builds only,
    as the engine picks the Edge TPU build itself."""
    return tuple(sorted(n for n, s in MODELS.items() if s.role == role and not s.edgetpu))


def edgetpu_twins() -> dict[str, str]:
    """Edge TPU build name -> the CPU model a configuration names instead."""
    return {n: s.cpu_twin for n, s in MODELS.items() if s.edgetpu and s.cpu_twin}


class ModelError(Exception):
    """A model is unknown, missing or fails its checksum. The message is one line for the user."""


def default_model_dir() -> Path:
    # Under systemd, StateDirectory=fallwatch sets STATE_DIRECTORY=/var/lib/fallwatch.
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "models"
    return Path.home() / ".cache" / "fallwatch" / "models"


def resolve_model_dir(cli_dir: Optional[str] = None, config_dir: Optional[str] = None) -> Path:
    """Search order: --model-dir, FALLWATCH_MODEL_DIR, the configured models.dir, then the default."""
    for candidate in (cli_dir, os.environ.get("FALLWATCH_MODEL_DIR"), config_dir):
        if candidate:
            return Path(candidate).expanduser()
    return default_model_dir()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_path(name: str, model_dir: Path, verify: bool = True) -> Path:
    """The verified path of a registered model, or ModelError naming the file and the fetch command."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    path = Path(model_dir) / spec.file
    if not path.is_file():
        raise ModelError(f"model file {path} is missing; run: fallwatch models fetch {name}")
    if verify and spec.sha256 and sha256_of(path) != spec.sha256:
        raise ModelError(
            f"model file {path} fails its sha256 check (expected {spec.sha256[:12]}…); "
            f"run: fallwatch models fetch {name}"
        )
    return path
