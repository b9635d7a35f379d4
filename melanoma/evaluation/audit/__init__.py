"""Train/val/test leakage audit: exact and near-duplicate images across splits, and images of
one lesion or patient on both sides.

Metrics measured on a test set that shares images with the training data overstate
generalisation, so the benchmark reports them on the full test set *and* on the "clean" subset
of test images that have no duplicate (and no image of the same lesion) in train or val.

Command line::

    melanoma-bench audit --data-dir DATA_DIR [--out reports/audit] [--min-corr 0.95] [--include-flips]

Files are found by :mod:`melanoma.data.layout` (the one way this project finds images) and
``train/`` is split into train/val exactly as ``melanoma-bench run`` splits it.

Python::

    from melanoma.evaluation.audit import clean_test_files, find_duplicates, summarise
    from melanoma.reporting.audit_figures import write_audit
    pairs = find_duplicates(items, min_corr=0.95)
    summary = summarise(pairs, items)
    write_audit(pairs, summary, "reports/audit")
    clean = clean_test_files(pairs, items)   # evaluate metrics on these too

``items`` is any sequence of objects with ``.path`` (path-like), ``.split``
(``'train' | 'val' | 'test'``) and ``.label`` (0 benign, 1 malignant)
attributes, e.g. :class:`AuditItem` or the data module's ``ImageRecord``.

How duplicates are defined
--------------------------
* The detector is :mod:`melanoma.evaluation.dedup`, measured on the 2,747 real ISIC 2017
  images (docs/duplicate_audit.md): planted re-encoded, resized, cropped (<= 10%) and
  flipped/rotated copies found 100%, no false flags among the real images at the default
  ``min_corr = 0.95``. (The 16x16 average hash it replaces paired unrelated lesions, "a dark
  blob on pink skin", everywhere.)
* ``kind='exact'``: identical file bytes (SHA-256 of the file content).
* ``kind='near'``: not byte-identical, but the detector's band-pass correlation after
  alignment (scale, shift, brightness) is >= ``min_corr`` (identical decoded pixels score 1).
  The per-pair scores are in ``bandpass_corr`` and ``ssim``.
* ``kind='same_lesion'``: the data root's ``manifest.csv`` (written by ``melanoma-bench
  import``) gives both files the same lesion or patient id (``group_id``) and they lie in
  different splits; a pair the detector also flags keeps its exact/near kind. ``group``
  holds the shared id. Test images in such pairs are not clean either.
* **Flipped / rotated copies are NOT searched by default.** ``include_flips=True`` also
  matches the 7 flips and 90-degree rotations; ``transform`` names the one that maps file_a
  onto file_b (``'none' | 'flip_lr' | 'flip_ud' | 'rot180' | 'rot90' | 'rot270' |
  'transpose' | 'anti_transpose'``; without the option it is always ``'none'``).
* Unreadable files (zero bytes, not an image, truncated) are skipped: they are
  in no pair, are listed in ``pairs.attrs['unreadable']`` and counted by
  :func:`summarise` (``n_unreadable``).  They are not "clean" either, because
  they could not be checked (nor evaluated).

Pairs are unordered and reported once, oriented so that ``split_a`` comes
first in train < val < test order (ties: by path), e.g. a train image and its
test copy always give ``split_a='train', split_b='test'``.  A group of k
copies gives all k*(k-1)/2 pairs.

Cost: see :mod:`melanoma.evaluation.dedup` (one decode per image; a candidate pass of about
N^2 * 2,000 flops and about 1 ms of CPU per confirmed candidate, about 5 per image; measured
41 s of CPU for 2,947 images, both with and without flips, in docs/duplicate_audit.md).
"""

from melanoma.evaluation.audit.items import (  # noqa: F401 - the public audit API
    KINDS,
    PAIR_COLUMNS,
    SPLITS,
    AuditItem,
    content_hash,
    groups_for,
    is_readable,
    read_groups,
)
from melanoma.evaluation.audit.pairs import (  # noqa: F401
    find_duplicates,
    items_from_layout,
    items_from_splits,
    read_pairs,
    signatures_of,
)
from melanoma.evaluation.audit.summary import clean_test_files, summarise  # noqa: F401
