"""EfficientNet-B6 at 528 px on one GPU with Keras 3 on the JAX backend: train/infer images/s
and GPU busy time when batches stream from a host memmap vs sit on the device.

Written for a lent GPU machine that has JAX but no TensorFlow (so the project's tf.data
pipeline cannot run there); the model is the project's classifier, built by its factory.
    KERAS_BACKEND=jax python3 benchmarks/gpu_keras_jax.py --out "$OUT"       # the GPU run
    KERAS_BACKEND=jax python benchmarks/gpu_keras_jax.py --tiny --out /tmp/g  # CPU wiring check
The script enforces its own wall budget (--budget seconds from its start): items that would
not fit are skipped, and a watchdog writes what it has and exits if one overruns.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import traceback

from gpu_feed import make_memmap, prefetched, streamed
from gpu_sampler import GpuSampler

os.environ.setdefault("KERAS_BACKEND", "jax")
T0 = time.perf_counter()
log = logging.getLogger("gpu_keras_jax")
RESULTS: dict = {"items": {}, "skipped": {}, "errors": {}}
STATE = {"out": ".", "item": None}
COMPILES = {"count": 0, "seconds": 0.0}


def elapsed() -> float:
    return time.perf_counter() - T0


def write_results() -> None:
    """Write the JSON atomically (called after every item, and by the watchdog)."""
    RESULTS["elapsed_s"] = round(elapsed(), 1)
    path = os.path.join(STATE["out"], "gpu_keras_jax.json")
    with open(path + ".tmp", "w") as f:
        json.dump(RESULTS, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def watchdog(deadline: float) -> None:
    """At the deadline, record which item was cut off, write the results and exit."""
    time.sleep(max(0.0, deadline - elapsed()))
    RESULTS["stopped_by_watchdog"] = {"item": STATE["item"], "at_s": round(elapsed(), 1)}
    log.warning("budget reached during %s: writing results and exiting", STATE["item"])
    write_results()
    logging.shutdown()
    os._exit(0)


def environment() -> dict:
    import jax
    import keras
    import numpy as np

    smi = shutil.which("nvidia-smi")

    def ask(*a):
        return subprocess.run([smi, *a], capture_output=True, text=True, check=False).stdout.strip()

    gpus = ask("-L") if smi else None
    driver = ask("--query-gpu=driver_version,memory.total", "--format=csv") if smi else None
    return {"nvidia_smi_L": gpus, "driver_memory": driver, "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "keras": keras.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "jax_devices": [str(d) for d in jax.devices()], "backend": keras.backend.backend(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def classifier_factory():
    """The project's build_classifier (new layout, then old), else a verbatim copy of its head."""
    sys.path.insert(0, os.getcwd())
    for module in ("melanoma.models.factory", "melanoma.model"):
        try:
            mod = __import__(module, fromlist=["build_classifier"])
            return mod.build_classifier, module
        except Exception as exc:  # noqa: BLE001 - e.g. the package needs TensorFlow here
            log.info("could not import %s (%s): using the local copy", module, exc)
    return build_classifier_copy, "local copy of melanoma.model.build_classifier"


def build_classifier_copy(backbone="B6", image_size=None, weights="none", head_units=256,
                          dropout=0.0, **_):
    """Same graph as melanoma.model.build_classifier (weights none, backbone trainable)."""
    import keras

    base = getattr(keras.applications, f"EfficientNet{backbone}")(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(head_units, activation="relu", name="head_dense")(x)
    outputs = keras.layers.Dense(2, activation="softmax", dtype="float32", name="head_softmax")(x)
    return keras.Model(base.input, outputs, name=f"efficientnet_{backbone.lower()}_classifier")


def build_model(cfg, policy: str, jit: bool):
    """Build and compile the classifier under a dtype policy (Adam 1e-4, categorical CE)."""
    import keras

    keras.mixed_precision.set_global_policy(policy)
    t = time.perf_counter()
    model = cfg.factory(backbone=cfg.backbone, image_size=cfg.size, weights="none",
                        head_units=cfg.head_units)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy",
                  jit_compile=jit)
    keras.mixed_precision.set_global_policy("float32")
    assert model.layers[-1].compute_dtype == "float32", "softmax Dense must stay float32"
    return model, round(time.perf_counter() - t, 2)


def device_batches(cfg, batch: int, count: int):
    """``count`` random uint8 image batches and one-hot labels, already on the GPU."""
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        x = rng.integers(0, 256, (batch, cfg.size, cfg.size, 3), dtype=np.uint8)
        y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, batch)]
        out.append((jax.device_put(x), jax.device_put(y)))
    jax.block_until_ready(out)
    return out


def cycle(batches):
    while True:
        yield from batches


def timed_fit(model, make_gen, steps: int) -> float:
    """Wall seconds of model.fit over ``steps`` batches; fit returns after syncing the state."""
    import jax

    t = time.perf_counter()
    model.fit(make_gen(), steps_per_epoch=steps, epochs=1, verbose=0)
    jax.block_until_ready([v.value for v in model.variables])  # eager: last update done too
    return time.perf_counter() - t


def compile_counter(event: str, duration: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES["count"] += 1
        COMPILES["seconds"] += duration


def measure_training(cfg, model, batches, repeats: int, steps: int) -> dict:
    """First fit step (trace + XLA compile + one step), warm-up, then median of repeats."""
    make_gen = lambda: cycle(batches)
    c0 = dict(COMPILES)
    first = timed_fit(model, make_gen, 1)
    compiled = {"compiles": COMPILES["count"] - c0["count"],
                "backend_compile_s": round(COMPILES["seconds"] - c0["seconds"], 2)}
    warm = timed_fit(model, make_gen, cfg.warm_steps)
    c1 = COMPILES["count"]
    walls = [timed_fit(model, make_gen, steps) for _ in range(repeats)]
    rates = [steps * cfg.batch / w for w in walls]
    return {"first_fit_1_step_s": round(first, 2), **compiled,
            "warmup_s": round(warm, 2), "warmup_steps": cfg.warm_steps,
            "timed": f"{repeats} fit calls x {steps} steps x batch {cfg.batch}",
            "images_per_s_median": round(statistics.median(rates), 2),
            "images_per_s_all": [round(r, 2) for r in rates],
            "step_ms_median": round(1000 * statistics.median(walls) / steps, 2),
            "recompiles_during_timing": COMPILES["count"] - c1}


def measure_inference(cfg, model, batch: int, repeats: int, steps: int) -> dict:
    """model.predict on device-resident batches: first call (compile), then median of repeats."""
    batches = [(x,) for x, _ in device_batches(cfg, batch, 2)]
    t = time.perf_counter()
    model.predict(cycle(batches), steps=1, verbose=0)
    first = time.perf_counter() - t
    model.predict(cycle(batches), steps=2, verbose=0)
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.predict(cycle(batches), steps=steps, verbose=0)  # returns numpy: synced
        walls.append(time.perf_counter() - t)
    rates = [steps * batch / w for w in walls]
    return {"batch": batch, "first_predict_s": round(first, 2),
            "images_per_s_median": round(statistics.median(rates), 2),
            "images_per_s_all": [round(r, 2) for r in rates]}


def memory_stats() -> dict | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    keys = ("peak_bytes_in_use", "bytes_limit")
    return {k: round(stats[k] / 2**30, 2) for k in keys if k in stats} or None


def busy_run(cfg, model, make_gen, rate: float) -> dict:
    """Train ~cfg.stream_seconds from ``make_gen`` while sampling GPU utilization."""
    steps = max(2, round(cfg.stream_seconds * rate / cfg.batch))
    timed_fit(model, make_gen, 3)  # warm the input path; the train function is already compiled
    c0 = COMPILES["count"]
    sampler = GpuSampler(interval_ms=100)
    wall = timed_fit(model, make_gen, steps)
    util = sampler.stop()
    return {"steps": steps, "wall_s": round(wall, 2),
            "images_per_s": round(steps * cfg.batch / wall, 2), **util,
            "recompiles_during_timing": COMPILES["count"] - c0}


def measure_busy(cfg, model, rate: float) -> dict:
    """(c): the same compiled model fed device-resident batches vs batches streamed from disk."""
    path = os.path.join(cfg.scratch, "gpu_bench_cache.npy")
    t = time.perf_counter()
    mm = make_memmap(cfg, path)
    out = {"cache": {"images": len(mm), "gb": round(mm.nbytes / 1e9, 2), "path": path,
                     "write_s": round(time.perf_counter() - t, 2),
                     "note": "written just before: pages are likely in the host page cache"}}
    resident = device_batches(cfg, cfg.batch, 8)
    out["device_resident"] = busy_run(cfg, model, lambda: cycle(resident), rate)
    out["streamed_memmap_generator"] = busy_run(cfg, model, lambda: streamed(cfg, mm), rate)
    out["streamed_memmap_prefetch_thread"] = busy_run(
        cfg, model, lambda: prefetched(streamed(cfg, mm)), rate)
    a = out["device_resident"]
    for b in (out["streamed_memmap_generator"], out["streamed_memmap_prefetch_thread"]):
        b["vs_resident_images_per_s"] = round(b["images_per_s"] / a["images_per_s"], 3)
        if a.get("mean_util_pct") and b.get("mean_util_pct"):
            b["vs_resident_util"] = round(b["mean_util_pct"] / a["mean_util_pct"], 3)
    os.remove(path)
    return out


def measure_eager(cfg) -> dict:
    """(a) mixed_float16 without jit: a first fit step and a few timed steps only."""
    model, build_s = build_model(cfg, "mixed_float16", jit=False)
    batches = device_batches(cfg, cfg.batch, 2)
    STATE["item"] = "train_mixed_float16_eager (first step)"
    first = timed_fit(model, lambda: cycle(batches), 1)
    write_results()
    STATE["item"] = "train_mixed_float16_eager (timed steps)"
    wall = timed_fit(model, lambda: cycle(batches), cfg.eager_steps)
    return {"build_s": build_s, "first_fit_1_step_s": round(first, 2),
            "timed": f"1 fit call x {cfg.eager_steps} steps x batch {cfg.batch}",
            "images_per_s": round(cfg.eager_steps * cfg.batch / wall, 2),
            "step_ms": round(1000 * wall / cfg.eager_steps, 1)}


def train_item(cfg, ctx, policy: str) -> dict:
    model, build_s = build_model(cfg, policy, jit=True)
    ctx[policy] = model
    res = {"policy": policy, "jit_compile": True, "build_s": build_s,
           "optimizer": type(model.optimizer).__name__, "params": model.count_params(),
           **measure_training(cfg, model, device_batches(cfg, cfg.batch, 4),
                              cfg.repeats, cfg.steps)}
    ctx.setdefault("compile_s", res["first_fit_1_step_s"] + build_s)
    return res


def plan(cfg, ctx):
    """(name, estimated seconds, thunk), most important first."""
    est_train = lambda: ctx.get("compile_s", 0) * 1.2 + 15
    est_infer = lambda: ctx.get("infer_s", ctx.get("compile_s", 0) * 0.5) * 1.2 + 5
    train = {p: (f"train_{p}_xla", est_train, lambda p=p: train_item(cfg, ctx, p))
             for p in ("mixed_float16", "float32", "mixed_bfloat16")}
    infer = {(p, b): (f"infer_{p}_xla_b{b}", est_infer, lambda p=p, b=b: infer_item(cfg, ctx, p, b))
             for p in ("mixed_float16", "float32") for b in cfg.infer_batches}
    busy = ("gpu_busy_streamed_vs_resident", lambda: 3 * cfg.stream_seconds + 30,
            lambda: measure_busy(cfg, needs(ctx, "mixed_float16"), ctx["rate"]))
    small, large = cfg.infer_batches
    # (c) needs no new compile: it runs once each of (a) and (b) has a figure, before extras.
    items = [train["mixed_float16"], train["float32"], infer["mixed_float16", small],
             infer["float32", small], busy, infer["mixed_float16", large],
             infer["float32", large], train["mixed_bfloat16"],
             ("train_mixed_float16_eager", lambda: 45, lambda: measure_eager(cfg))]
    return items


class Skip(Exception):
    """An item that cannot run because an item it reuses did not."""


def needs(ctx, policy: str):
    """The compiled model of a training item, or Skip when that item did not run."""
    if policy not in ctx:
        raise Skip(f"no {policy} model: its training item did not run")
    return ctx[policy]


def infer_item(cfg, ctx, policy: str, batch: int) -> dict:
    res = measure_inference(cfg, needs(ctx, policy), batch, cfg.repeats, cfg.infer_steps)
    ctx.setdefault("infer_s", res["first_predict_s"])
    return res


def run_items(cfg, ctx) -> None:
    for name, est, thunk in plan(cfg, ctx):
        if cfg.only and not any(word in name for word in cfg.only.split(",")):
            continue
        need = est()
        if elapsed() + need > cfg.budget:
            RESULTS["skipped"][name] = f"needs ~{need:.0f} s, {cfg.budget - elapsed():.0f} s left"
            log.info("skip %s: %s", name, RESULTS["skipped"][name])
            continue
        STATE["item"] = name
        log.info("start %s at %.1f s (estimate %.0f s)", name, elapsed(), need)
        t = time.perf_counter()
        try:
            res = thunk()
            res["item_wall_s"] = round(time.perf_counter() - t, 1)
            res["gpu_memory_gib"] = memory_stats()
            RESULTS["items"][name] = res
            if name == "train_mixed_float16_xla":
                ctx["rate"] = res["images_per_s_median"]
            log.info("done %s: %s", name, json.dumps(res, default=str))
        except Skip as exc:
            RESULTS["skipped"][name] = str(exc)
            log.info("skip %s: %s", name, exc)
        except Exception as exc:  # noqa: BLE001 - record it, go on with the next item
            RESULTS["errors"][name] = f"{type(exc).__name__}: {exc}"[:1000]
            log.error("item %s failed: %s\n%s", name, RESULTS["errors"][name][:300],
                      traceback.format_exc(limit=-4)[-1500:])
        write_results()


def summary() -> None:
    """A short table last in the output: images/s, first call seconds, mean GPU utilization."""
    rows = dict(RESULTS["items"])
    busy = rows.pop("gpu_busy_streamed_vs_resident", {})
    rows.update({k: v for k, v in busy.items() if isinstance(v, dict) and "steps" in v})
    for name, r in rows.items():
        log.info("%-32s images/s %8s  first %7s s  util %s %%", name,
                 r.get("images_per_s_median", r.get("images_per_s")),
                 r.get("first_fit_1_step_s", r.get("first_predict_s", "-")),
                 r.get("mean_util_pct", "-"))
    log.info("skipped: %s  errors: %s", RESULTS["skipped"], list(RESULTS["errors"]))


def config(args) -> argparse.Namespace:
    tiny = args.tiny
    return argparse.Namespace(
        backbone="B0" if tiny else "B6", size=32 if tiny else 528, batch=16, head_units=256,
        warm_steps=1 if tiny else 3, repeats=2 if tiny else 5, steps=2 if tiny else 10,
        infer_batches=(16, 64), infer_steps=2 if tiny else 8, eager_steps=2 if tiny else 3,
        stream_seconds=2 if tiny else 15, cache_images=64 if tiny else 1024,
        budget=args.budget, scratch=args.scratch, tiny=tiny, only=args.only)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="B0 at 32 px, 2 steps (CPU wiring check)")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_out"))
    p.add_argument("--budget", type=float, default=420.0, help="seconds from start, all items")
    p.add_argument("--only", default="", help="run items whose name has one of these words "
                   "(comma-separated), e.g. train_mixed_float16,infer")
    p.add_argument("--scratch", default="/tmp", help="local disk folder for the memmap cache")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    STATE["out"] = args.out
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=[
        logging.StreamHandler(sys.stdout),
        logging.FileHandler(os.path.join(args.out, "gpu_keras_jax.log"))])
    threading.Thread(target=watchdog, args=(args.budget + 20,), daemon=True).start()
    cfg = config(args)
    import jax

    jax.monitoring.register_event_duration_secs_listener(compile_counter)
    RESULTS["environment"] = environment()
    RESULTS["import_s"] = round(elapsed(), 1)
    cfg.factory, RESULTS["model_source"] = classifier_factory()
    RESULTS["config"] = {k: v for k, v in vars(cfg).items() if k != "factory"}
    RESULTS["command"] = " ".join([os.path.basename(sys.executable)] + sys.argv)
    log.info("environment: %s", json.dumps(RESULTS["environment"]))
    write_results()
    run_items(cfg, {})
    summary()
    write_results()
    return 0


if __name__ == "__main__":
    sys.exit(main())
