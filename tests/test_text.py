from cxrlens.text import fmt, fmt_ci, fmt_mean_std, slug


def test_fmt_mean_std_shows_an_undefined_spread():
    assert fmt_mean_std({"mean": 0.8544, "std": 0.0081}) == "0.854 ± 0.008"
    assert fmt_mean_std({"mean": 0.8544, "std": float("nan")}) == "0.854 ± n/a"  # one fold: no spread
    assert fmt_mean_std({"mean": float("nan"), "std": float("nan")}) == "n/a"
    assert fmt_mean_std({"mean": None, "std": None}) == "n/a"


def test_fmt():
    assert fmt(0.12345) == "0.123"
    assert fmt(None) == fmt(float("nan")) == fmt("text") == fmt(True) == "n/a"
    assert fmt(0.00004) == "4.0e-05"  # too small for three decimals: not shown as 0.000
    assert fmt(0.0) == "0.000"
    assert fmt_ci(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]" and fmt_ci(0.5, None, 0.6) == "0.500"


def test_slug_is_file_safe_and_unique():
    assert slug("COVID-19") == "COVID-19" and slug("ensemble-mean") == "ensemble-mean"
    assert slug("Viral Pneumonia").startswith("Viral-Pneumonia-")
    assert slug("A B") != slug("A-B") and slug("A/B") != slug("A_B")
    assert slug("x" * 100, limit=10).startswith("x" * 10) and len(slug("x" * 100, limit=10)) == 17
    assert slug("..") != "" and "/" not in slug("../../etc")
