"""Recall and false flags of the duplicate detector on real dermoscopy, next to the old audit.

    python -m benchmarks.measure_audit --data-dir ../shared/data/isic2017 --out reports/measure_audit

Plants copies of ``--copies`` (50) images of the data set, each as: JPEG quality 70; resized
to 224 and back (saved at quality 95); a crop of up to 10% per side length at a random place,
resized back; and a flip or 90-degree rotation (found only with ``include_flips``). Then runs
:func:`melanoma.evaluation.dedup` (the pieces ``find_duplicate_pairs`` chains) and the old
16x16 average hash within 12 bits (``benchmarks/old_average_hash.py``) on the same files.

Reported: recall on the planted copies (pair copy-source found) per kind; flagged pairs among
the distinct real images, split into byte-identical files (true duplicates), pairs reviewed by
eye (``benchmarks/isic2017_duplicates_reviewed.csv``: same photograph, same lesion in another
photograph, different lesions, could not tell) and unreviewed ones; false flags = different +
could not tell + unreviewed + copies paired with an unrelated image; a sweep of the thresholds
of both scores; timings (wall and CPU seconds: on a shared machine the wall time says
little). Writes results.json, planted.csv, flagged_real_pairs_*.csv (real pairs
with band-pass correlation >= 0.85) and a montage of the unreviewed ones under ``--out``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REVIEWED = Path(__file__).with_name("isic2017_duplicates_reviewed.csv")
KINDS = ("jpeg70", "resize224", "crop", "flip")
SWEEP = (0.85, 0.9, 0.93, 0.95, 0.97, 0.98)
# verdicts of the review by eye: the same photograph (re-encoded, recoloured, flipped...), the
# same lesion in another photograph, different lesions, could not tell
VERDICTS = ("same", "same_lesion", "different", "unsure")
TRUE_CLASSES = ("byte_identical", "reviewed_same", "reviewed_same_lesion")  # the rest are false flags


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def plant(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One planted copy of ``img`` as JPEG bytes, and a note of what was done."""
    from melanoma.evaluation.dedup import TRANSFORMS

    h, w = img.shape[:2]
    bilinear = Image.Resampling.BILINEAR
    if kind == "jpeg70":
        return _jpeg(img, 70), "quality 70"
    if kind == "resize224":
        small = Image.fromarray(img).resize((224, 224), bilinear)
        return _jpeg(np.asarray(small.resize((w, h), bilinear)), 95), "224 and back"
    if kind == "crop":
        fy, fx = rng.uniform(0.0, 0.10, 2)
        ch, cw = round(h * (1 - fy)), round(w * (1 - fx))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        part = Image.fromarray(img[y0:y0 + ch, x0:x0 + cw]).resize((w, h), bilinear)
        return _jpeg(np.asarray(part), 95), f"crop {fy:.3f} x {fx:.3f} at ({y0}, {x0})"
    name = str(rng.choice([t for t in TRANSFORMS if t != "none"]))
    moved = TRANSFORMS[name](np.moveaxis(img, -1, 0))  # the transforms act on the last two axes
    return _jpeg(np.ascontiguousarray(np.moveaxis(moved, 0, -1)), 95), name


def make_copies(files: list[Path], n: int, seed: int, folder: Path) -> pd.DataFrame:
    """Write the planted copies under ``folder``; one row per copy (file, source, kind, note)."""
    rng = np.random.default_rng(seed)
    sources = sorted(rng.choice(len(files), size=n, replace=False).tolist())
    rows = []
    for s in sources:
        with Image.open(files[s]) as im:
            img = np.asarray(im.convert("RGB"))
        for kind in KINDS:
            data, note = plant(img, kind, rng)
            path = folder / f"planted_{files[s].stem}_{kind}.jpg"
            path.write_bytes(data)
            rows.append({"file": str(path), "source": s, "source_id": files[s].stem, "kind": kind,
                         "note": note})
    return pd.DataFrame(rows)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def reviewed_pairs() -> dict[frozenset, str]:
    """{frozenset({id_a, id_b}): verdict} from the reviewed-pairs file (one of VERDICTS)."""
    if not REVIEWED.is_file():
        return {}
    df = pd.read_csv(REVIEWED)
    return {frozenset((a, b)): v for a, b, v in zip(df["image_a"], df["image_b"], df["verdict"])}


class Truth:
    """What is known about the images: ids, byte-identical files, reviewed pairs, copies."""

    def __init__(self, paths: list[Path], n_real: int, copies: pd.DataFrame):
        self.ids = [p.stem for p in paths]
        self.n_real = n_real
        self.md5 = [md5(p) for p in paths[:n_real]]
        self.reviewed = reviewed_pairs()
        self.source = {n_real + k: int(s) for k, s in enumerate(copies["source"])}
        self.kind = {n_real + k: kd for k, kd in enumerate(copies["kind"])}

    def real_class(self, a: int, b: int) -> str:
        if self.md5[a] == self.md5[b]:
            return "byte_identical"
        verdict = self.reviewed.get(frozenset((self.ids[a], self.ids[b])))
        return f"reviewed_{verdict}" if verdict in VERDICTS else "unreviewed"

    def same_photo(self, a: int, b: int) -> bool:
        """Whether two images are known to show the same photograph."""
        root = lambda k: self.source.get(k, k)  # a copy stands for its source
        ra, rb = root(a), root(b)
        return ra == rb or self.real_class(ra, rb) in TRUE_CLASSES


def evaluate(flagged: set[tuple[int, int]], truth: Truth, copies_in_run: list[int]) -> dict:
    """Recall per planted kind and the flagged pairs among the real images, classified."""
    recall = {}
    for kind in KINDS:
        ks = [c for c in copies_in_run if truth.kind[c] == kind]
        if ks:
            hit = sum((truth.source[c], c) in flagged for c in ks)
            recall[kind] = {"found": hit, "of": len(ks), "recall": round(hit / len(ks), 4)}
    all_ks = copies_in_run
    found = sum((truth.source[c], c) in flagged for c in all_ks)
    real = {"byte_identical": 0, **{f"reviewed_{v}": 0 for v in VERDICTS}, "unreviewed": 0}
    copy_false = 0
    for a, b in flagged:
        if a < truth.n_real and b < truth.n_real:
            real[truth.real_class(a, b)] += 1
        elif not truth.same_photo(a, b):
            copy_false += 1
    false = sum(n for c, n in real.items() if c not in TRUE_CLASSES) + copy_false
    return {"recall": round(found / len(all_ks), 4), "found": found, "of": len(all_ks),
            "recall_by_kind": recall, "flagged_real_pairs": real,
            "copy_pairs_with_unrelated_images": copy_false, "false_flags": false,
            "false_flags_per_image": round(false / truth.n_real, 5),
            "flagged_pairs_total": len(flagged)}


def source_ranks(sig, truth: Truth, local_of: list[int], flips: bool) -> dict:
    """Rank of each copy's source among the real images by the candidate similarity (0 = best)."""
    from melanoma.evaluation.dedup import (
        TRANSFORM_NAMES,
        similarities,
        transformed_thumbs,
    )

    names = TRANSFORM_NAMES if flips else ("none",)
    rows = np.array([k for k, g in enumerate(local_of) if g >= truth.n_real])
    sim = similarities(sig, rows, transformed_thumbs(sig.thumbs[0], names))[:, :, :truth.n_real]
    best = sim.max(axis=0)  # (copies, real images)
    ranks = np.array([(np.delete(best[r], truth.source[local_of[k]]) > best[r, truth.source[local_of[k]]]).sum()
                      for r, k in enumerate(rows)])
    return {"max": int(ranks.max()), "mean": round(float(ranks.mean()), 3),
            "n_rank_ge_3": int((ranks >= 3).sum()), "n_rank_ge_5": int((ranks >= 5).sum())}


def run_new(sig_all, truth: Truth, idx: list[int], flips: bool) -> tuple[dict, pd.DataFrame]:
    """The detector on images ``idx`` (global indices): timings, threshold sweep, default."""
    from melanoma.evaluation import dedup

    sig = sig_all.take(idx)
    g = np.asarray(idx)
    t0, c0 = time.perf_counter(), time.process_time()
    cands = dedup.candidate_pairs(sig, include_flips=flips)
    t1, c1 = time.perf_counter(), time.process_time()
    same = dedup.identical_pairs(sig)
    known = set(zip(same["i"], same["j"]))
    cands = cands[[(i, j) not in known for i, j in zip(cands["i"], cands["j"])]].reset_index(drop=True)
    scored = dedup.score_pairs(sig, cands)
    t2, c2 = time.perf_counter(), time.process_time()
    scored["a"], scored["b"] = g[scored["i"]], g[scored["j"]]
    base = {(int(g[i]), int(g[j])) for i, j in known}
    copies = [int(k) for k in idx if k >= truth.n_real]

    def flagged(col: str, t: float) -> set:
        ok = (scored[col] >= t) & (scored["overlap"] >= dedup.MIN_OVERLAP)
        return base | set(zip(scored.loc[ok, "a"].tolist(), scored.loc[ok, "b"].tolist()))

    cand_set = base | set(zip(scored["a"].tolist(), scored["b"].tolist()))
    out = {
        "n_images": len(idx), "n_candidates": len(cands), "n_identical_pairs": len(known),
        "seconds_candidates": round(t1 - t0, 1), "seconds_confirm": round(t2 - t1, 1),
        "cpu_seconds_candidates": round(c1 - c0, 1), "cpu_seconds_confirm": round(c2 - c1, 1),
        "candidate_recall": evaluate(cand_set, truth, copies)["recall"],
        "source_rank": source_ranks(sig, truth, list(idx), flips),
        "default": {"rule": f"bandpass_corr >= {dedup.MIN_CORR}",
                    **evaluate(flagged("bandpass_corr", dedup.MIN_CORR), truth, copies)},
        "sweep_bandpass_corr": {str(t): _brief(evaluate(flagged("bandpass_corr", t), truth, copies))
                                for t in SWEEP},
        "sweep_ssim": {str(t): _brief(evaluate(flagged("ssim", t), truth, copies))
                       for t in (0.9, 0.95, 0.97, 0.98, 0.99)},
    }
    return out, scored


def _brief(ev: dict) -> dict:
    return {"recall": ev["recall"], "false_flags": ev["false_flags"],
            "false_flags_per_image": ev["false_flags_per_image"],
            "true_real_pairs": sum(ev["flagged_real_pairs"][c] for c in TRUE_CLASSES)}


def run_old(paths: list[Path], truth: Truth, idx: list[int], flips: bool) -> dict:
    """The previous audit (16x16 average hash, <= 12 bits) on the same files."""
    from benchmarks.old_average_hash import flagged_pairs

    t0, c0 = time.perf_counter(), time.process_time()
    found = flagged_pairs([paths[k] for k in idx], 12, include_flips=flips)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    flagged = {tuple(sorted((idx[a], idx[b]))) for a, b in found}
    copies = [k for k in idx if k >= truth.n_real]
    return {"rule": "average hash 16x16, Hamming <= 12" + (", flips lr/tb/rot180" if flips else ""),
            "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), **evaluate(flagged, truth, copies)}


def montage(pairs: list[tuple[int, int, str]], paths: list[Path], out: Path, size: int = 128) -> None:
    """Pairs side by side with their ids and scores, for review by eye."""
    from PIL import ImageDraw

    if not pairs:
        return
    sheet = Image.new("RGB", (2 * size + 12, len(pairs) * (size + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (a, b, caption) in enumerate(pairs):
        y = r * (size + 16)
        for x, k in ((0, a), (size + 12, b)):
            with Image.open(paths[k]) as im:
                sheet.paste(im.convert("RGB").resize((size, size)), (x, y + 14))
        draw.text((2, y), caption, fill="black")
    sheet.save(out)


def real_pairs_table(scored: pd.DataFrame, truth: Truth, floor: float) -> pd.DataFrame:
    """Real-image pairs scored >= ``floor`` (band-pass correlation), best transform each."""
    real = scored[(scored["a"] < truth.n_real) & (scored["b"] < truth.n_real)
                  & (scored["bandpass_corr"] >= floor)]
    real = real.sort_values("bandpass_corr", ascending=False).drop_duplicates(["a", "b"])
    return pd.DataFrame({
        "image_a": [truth.ids[a] for a in real["a"]], "image_b": [truth.ids[b] for b in real["b"]],
        "transform": real["transform"].to_numpy(), "thumb_corr": real["thumb_corr"].round(4).to_numpy(),
        "ssim": real["ssim"].round(4).to_numpy(), "bandpass_corr": real["bandpass_corr"].round(4).to_numpy(),
        "class": [truth.real_class(a, b) for a, b in zip(real["a"], real["b"])],
        "a": real["a"].to_numpy(), "b": real["b"].to_numpy()})


def main(argv: list[str] | None = None) -> dict:
    from melanoma.data import layout
    from melanoma.evaluation import dedup

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="../shared/data/isic2017")
    ap.add_argument("--out", default="reports/measure_audit")
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-old", action="store_true", help="do not run the old average-hash audit")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = layout.discover(args.data_dir)
    real = list(found.train.files) + list(found.test.files)
    results: dict = {"data_dir": str(found.root), "n_real": len(real), "copies_of": args.copies,
                     "seed": args.seed, "kinds": list(KINDS)}
    with tempfile.TemporaryDirectory() as tmp:
        copies = make_copies(real, args.copies, args.seed, Path(tmp))
        copies.drop(columns="file").to_csv(out / "planted.csv", index=False)
        paths = real + [Path(f) for f in copies["file"]]
        truth = Truth(paths, len(real), copies)
        t0, c0 = time.perf_counter(), time.process_time()
        sig = dedup.compute_signatures(dedup.file_loader(paths), len(paths))
        results["seconds_decode_and_signatures"] = round(time.perf_counter() - t0, 1)
        results["cpu_seconds_decode_and_signatures"] = round(time.process_time() - c0, 1)
        no_flip = [k for k in range(len(paths)) if k < len(real) or truth.kind[k] != "flip"]
        runs = {"without_flips": (no_flip, False), "with_flips": (list(range(len(paths))), True)}
        for name, (idx, flips) in runs.items():
            results[name], scored = run_new(sig, truth, idx, flips)
            if not args.skip_old:
                results[name]["old_audit"] = run_old(paths, truth, idx, flips)
            table = real_pairs_table(scored, truth, min(SWEEP))
            table.drop(columns=["a", "b"]).to_csv(out / f"flagged_real_pairs_{name}.csv", index=False)
            todo = table[table["class"] == "unreviewed"]
            montage([(a, b, f"{ia} {ib} {t} corr={c:.3f} ssim={s:.3f}") for a, b, ia, ib, t, c, s in zip(
                todo["a"], todo["b"], todo["image_a"], todo["image_b"], todo["transform"],
                todo["bandpass_corr"], todo["ssim"])], paths, out / f"unreviewed_{name}.png")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
