"""The Edge TPU tests: a fake libedgetpu.so.1 compiled for the run, and model directories for it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgetpu_testlib import build_fake_edgetpu, tpu_model_dir


@pytest.fixture(scope="session")
def fake_edgetpu_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the fake libedgetpu.so.1 (put it on LD_LIBRARY_PATH)."""
    return build_fake_edgetpu(tmp_path_factory.mktemp("fake-edgetpu"))


@pytest.fixture(scope="session")
def tpu_models(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CPU models plus an SSD "Edge TPU build" that answers exactly as the CPU SSD does."""
    return tpu_model_dir(model_dir, tmp_path_factory.mktemp("tpu-models"))


@pytest.fixture(scope="session")
def wrong_tpu_models(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, but the SSD "Edge TPU build" has perturbed weights: its answers disagree with the CPU's."""
    return tpu_model_dir(model_dir, tmp_path_factory.mktemp("wrong-tpu-models"), perturbed=True)


@pytest.fixture
def fake_tpu(fake_edgetpu_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """fake_tpu(mode): the fake library on LD_LIBRARY_PATH (children inherit it) in mode segv|hang|null|ok;
    returns the file the fake logs its delegate creations to."""
    calls = tmp_path / "fake-edgetpu-calls.log"

    def use(mode: str) -> Path:
        monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_edgetpu_dir))
        monkeypatch.setenv("FAKE_EDGETPU", mode)
        monkeypatch.setenv("FAKE_EDGETPU_LOG", str(calls))
        return calls

    return use
