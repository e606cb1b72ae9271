"""Dashboards built in shards (here, on 2 Ray workers), merged, equal a single-process build row for row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.corpus.fixtures import build_fixture_corpus
from tests.dashboards.token_features import token_model, token_transcoders
from tests.factories.models import tiny_tokenizer
from tracewire.batch import AttributionSettings, AttributionWorker
from tracewire.batch.dashboards import build_sharded_store, shard_ranges
from tracewire.batch.worker import DashboardShard
from tracewire.dashboards import DashboardConfig, FeatureStore, FeatureStoreError
from tracewire.dashboards.merge import merge_feature_stores
from tracewire.transcoders.io import save_transcoders

CONFIG = DashboardConfig(
    seq_len=32, n_top=5, n_quantiles=4, per_quantile=3, context_before=6, context_after=3, n_fine_bins=1024
)
TOKENS = 1200
TABLES = ("meta", "vocab", "features", "examples", "labels")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[AttributionSettings, Path, Path]:
    """The token-feature model and transcoders saved by path, a corpus, and the single-process store."""
    root = tmp_path_factory.mktemp("shard-assets")
    loaded = token_model()
    loaded.model.save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    save_transcoders(token_transcoders(loaded), root / "tc")
    corpus = build_fixture_corpus(root / "corpus").directory
    settings = AttributionSettings(model=str(root / "model"), transcoders=str(root / "tc"), device="cpu")
    single = root / "single.sqlite"
    worker = AttributionWorker(settings)
    shard = DashboardShard(0, (0, 2), (0, worker.transcoders.d_transcoder), str(corpus), str(single), TOKENS,
                           CONFIG.to_dict(), batch_windows=8)  # fmt: skip
    worker.build_dashboard_shard(shard)
    return settings, Path(corpus), single


def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in TABLES}
    finally:
        db.close()


def assert_same_store(a: Path, b: Path) -> None:
    ra, rb = rows(a), rows(b)
    for table in TABLES:
        assert ra[table] == rb[table], table  # BLOBs (histograms, quantiles, examples) compared byte for byte
    assert len(ra["features"]) == 2 * 96 and len(ra["examples"]) > 0


def test_shard_ranges_cover_every_feature_once() -> None:
    ranges = shard_ranges(2, 96, 5, "features")
    assert [r[1] for r in ranges] == [(0, 19), (19, 38), (38, 58), (58, 77), (77, 96)]
    assert shard_ranges(4, 8, 2, "layers") == [((0, 2), (0, 8)), ((2, 4), (0, 8))]
    with pytest.raises(ValueError, match=r"shards=3; expected 1\.\.2"):
        shard_ranges(2, 8, 3, "layers")


def test_sharded_build_here_equals_single_process(setup, tmp_path: Path) -> None:
    settings, corpus, single = setup
    out = build_sharded_store(
        settings, corpus, tmp_path / "merged.sqlite", tokens=TOKENS, shards=3, n_layers=2, d_transcoder=96,
        config=CONFIG, batch_windows=8, progress=False,
    )  # fmt: skip
    assert_same_store(out, single)
    assert not (tmp_path / "merged.sqlite.shards").exists()
    with FeatureStore(out, readonly=True) as merged, FeatureStore(single, readonly=True) as reference:
        assert merged.card(1, 17) == reference.card(1, 17)


def test_sharded_build_on_two_ray_workers_equals_single_process(setup, tmp_path: Path, ray_cluster) -> None:
    settings, corpus, single = setup
    out = build_sharded_store(
        settings, corpus, tmp_path / "merged.sqlite", tokens=TOKENS, shards=2, by="layers", n_layers=2,
        d_transcoder=96, workers=2, config=CONFIG, batch_windows=8, progress=False,
    )  # fmt: skip
    assert_same_store(out, single)


def test_merge_refuses_overlapping_and_foreign_shards(setup, tmp_path: Path) -> None:
    settings, corpus, single = setup
    with pytest.raises(FeatureStoreError, match="shards must not overlap"):
        merge_feature_stores([single, single], tmp_path / "x.sqlite")
    other = tmp_path / "other.sqlite"
    worker = AttributionWorker(settings)
    worker.build_dashboard_shard(
        DashboardShard(0, (0, 1), (0, 4), str(corpus), str(other), TOKENS // 2, CONFIG.to_dict(), 8)
    )
    with pytest.raises(FeatureStoreError, match="another build"):
        merge_feature_stores([single, other], tmp_path / "y.sqlite")
    assert not (tmp_path / "y.sqlite").exists()


def test_batch_dashboards_cli_equals_the_dashboards_cli(setup, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tracewire.cli.main import app

    settings, corpus, _ = setup
    common = ["-m", settings.model, "-t", settings.transcoders, "--corpus", str(corpus), "--tokens", "600"]
    common += ["--seq-len", "32", "--batch-windows", "8", "-q"]
    runner = CliRunner()
    single = runner.invoke(app, ["dashboards", "-o", str(tmp_path / "single.sqlite"), *common])
    assert single.exit_code == 0, single.output
    sharded = runner.invoke(
        app,
        ["batch", "dashboards", "-o", str(tmp_path / "sharded.sqlite"), "--shards", "3", "--device", "cpu",
         "--threads", "1", *common],
    )  # fmt: skip
    assert sharded.exit_code == 0, sharded.output
    assert_same_store(tmp_path / "sharded.sqlite", tmp_path / "single.sqlite")
