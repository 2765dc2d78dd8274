"""Shared fixtures: the model zoo and a helper to write small models to disk."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.phl"))


@pytest.fixture
def write_model(tmp_path):
    def write(text: str, name: str = "m.phl") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def open_dims(path) -> dict:
    """Values for a zoo model's open dims (64 each), so it can be compiled."""
    import physlearn
    return {k: 64 for k, v in physlearn.load(path).spec.dims.items() if v is None}


def train_briefly(path, out, epochs: int = 2, limit: int = 400) -> list[dict]:
    """`physlearn train` on the first `limit` digits; returns the metrics rows."""
    import json

    from physlearn import cli
    code = cli.main(["train", str(path), "--epochs", str(epochs), "--train-limit", str(limit),
                     "--out", str(out), "--no-progress"])
    assert code == 0
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
