"""Train/val/test leakage audit: exact and near-duplicate images across splits.

The public "Melanoma Skin Cancer Dataset of 10000 Images" (``train|test/
{Benign,Malignant}``, 300x300 JPEGs) leaks: roughly a quarter of its test
images have a near-duplicate in train (16x16 average hash, Hamming distance
<= 12).  Metrics measured on such a test set overstate generalisation, so the
benchmark reports them on the full test set *and* on the "clean" subset of
test images that have no duplicate in train or val.

Command line::

    melanoma-bench audit --data-dir DATA_DIR [--out reports/audit] [--max-distance 12] [--include-flips]

Files are found by :mod:`melanoma.data.layout` (the one way this project finds images) and
``train/`` is split into train/val exactly as ``melanoma-bench run`` splits it.

Python::

    from melanoma.evaluation.audit import clean_test_files, find_duplicates, summarise
    from melanoma.reporting.audit_figures import write_audit
    pairs = find_duplicates(items, max_distance=12)
    summary = summarise(pairs, items)
    write_audit(pairs, summary, "reports/audit")
    clean = clean_test_files(pairs, items)   # evaluate metrics on these too

``items`` is any sequence of objects with ``.path`` (path-like), ``.split``
(``'train' | 'val' | 'test'``) and ``.label`` (0 benign, 1 malignant)
attributes, e.g. :class:`AuditItem` or the data module's ``ImageRecord``.

How duplicates are defined
--------------------------
* ``kind='exact'``: identical file bytes (SHA-256 of the file content).
* ``kind='near'``: not byte-identical, but the perceptual hashes are within
  ``max_distance`` bits (Hamming distance).  The default hash is the 16x16
  *average hash* (256 bits): the image is converted to greyscale
  (``convert('L')``), resized to 16x16 with PIL's **LANCZOS** filter (the
  anti-aliasing filter ``imagehash.average_hash`` uses, so distances match the
  published leak analysis) and each bit is ``pixel > mean``.  A *difference
  hash* (``method='difference'``: resize to 17x16, bit = pixel brighter than
  its left neighbour) is available as an alternative.  Re-encoded (different
  JPEG quality) and rescaled copies stay within a few bits; unrelated images
  are ~128 bits apart (independent random hashes: binomial(256, 1/2), sd 8).
* **Flipped / mirrored copies are NOT duplicates by default.**  The average
  hash of a mirrored image is (up to rounding) the mirrored bit grid, which for
  a non-symmetric lesion is ~128 bits away from the original, so a left-right
  or top-bottom mirror of a training image is reported as unrelated.  The
  default reproduces the published 16x16 / <=12 analysis; it can UNDER-count
  leakage if a data set contains mirrored copies, so check once with
  ``include_flips=True``: every image is also hashed mirrored left-right,
  top-bottom and both (= rotated 180 degrees), and a pair is a near duplicate
  if any of these brings it within ``max_distance``.  The extra column
  ``flip`` names the closest one: ``'none' | 'lr' | 'tb' | 'lr+tb'``
  (``'none'`` wins ties; without the option it is always ``'none'``).
  (90-degree rotations are not searched.)
* Unreadable files (zero bytes, not an image, truncated) are skipped: they are
  in no pair, are listed in ``pairs.attrs['unreadable']`` and counted by
  :func:`summarise` (``n_unreadable``).  They are not "clean" either, because
  they could not be checked (nor evaluated).

Pairs are unordered and reported once, oriented so that ``split_a`` comes
first in train < val < test order (ties: by path), e.g. a train image and its
test copy always give ``split_a='train', split_b='test'``.  A group of k
copies gives all k*(k-1)/2 pairs.

Complexity
----------
Hashing is O(N) image decodes (threads, PIL releases the GIL).  Near pairs are
found exhaustively: bits are mapped to +-1 float32 so that
``S = A @ B.T = bits - 2 * hamming`` (exact in float32), and the upper triangle
of the N x N distance matrix is computed in row blocks of ``block_size``:
O(N^2 * bits / 2) multiply-adds through BLAS, O(block_size * N) memory
(1024 x 10,000 float32 = 40 MB), O(#pairs) output.  10,000 images (50M pairs)
take about a second on 2 CPU cores.  With ``include_flips`` the work is x7.
"""

from melanoma.evaluation.audit.hashing import (  # noqa: F401 - the public audit API
    PAIR_COLUMNS,
    SPLITS,
    AuditItem,
    HashTable,
    average_hash,
    content_hash,
    difference_hash,
    hash_items,
)
from melanoma.evaluation.audit.pairs import (  # noqa: F401
    find_duplicates,
    hamming_pairs,
    items_from_layout,
    items_from_splits,
    read_pairs,
    run_audit,
)
from melanoma.evaluation.audit.summary import clean_test_files, summarise  # noqa: F401
