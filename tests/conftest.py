"""Shared test set-up: quiet TensorFlow, and generated data sets and decoded-image caches
outside the user's home: $MELANOMA_DATA_CACHE when set (.ci/run sets it), else a per-user
folder in the system's temporary directory, kept between sessions so generated sets are
reused. Matplotlib's font cache goes there too (else ~/.cache/matplotlib). Tests of the
~/.cache default itself monkeypatch HOME and the variable."""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _test_cache() -> str:
    """``<tmp>/melanoma-bench-tests-<uid>``, or a fresh private folder when that name is
    taken by a link or by another user (a shared /tmp)."""
    folder = Path(tempfile.gettempdir()) / f"melanoma-bench-tests-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        ours = not folder.is_symlink() and folder.stat().st_uid == os.getuid()
    except OSError:  # e.g. a file of that name
        ours = False
    return str(folder) if ours else tempfile.mkdtemp(prefix="melanoma-bench-tests-")


if not os.environ.get("MELANOMA_DATA_CACHE"):  # an empty value means unset, as in the code
    os.environ["MELANOMA_DATA_CACHE"] = _test_cache()
os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ["MELANOMA_DATA_CACHE"], "matplotlib"))
