"""The per-map result cache: saved compactly and NaN-safe, reloaded, and a damaged file only costs work."""

import json
import math

from cxrlens.xai.cache import ResultCache


def test_results_survive_a_reload_with_nan_as_null(tmp_path):
    path = tmp_path / "xai" / "cache.json"
    cache = ResultCache(path)
    cache.put("sanity", "k", [0.5, math.nan])
    cache.put("faithfulness", "f", {"deletion": [1.0, 0.0]})
    assert not path.exists()  # written on save (or every few hundred results)
    cache.save()
    assert "\n" not in path.read_text(encoding="utf-8").strip()  # compact: it holds many curves
    again = ResultCache(path)
    assert again.get("sanity", "k") == [0.5, None]
    assert again.get("faithfulness", "f") == {"deletion": [1.0, 0.0]}
    assert again.get("random", "missing") is None


def test_a_damaged_or_foreign_cache_starts_empty(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text("{not json", encoding="utf-8")
    assert ResultCache(path).get("faithfulness", "f") is None
    path.write_text(json.dumps({"faithfulness": [1, 2], "random": {"r": 1}}), encoding="utf-8")
    cache = ResultCache(path)
    assert cache.data["faithfulness"] == {} and cache.get("random", "r") == 1
