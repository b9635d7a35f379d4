"""Evaluation: metrics, rows, model files, audit, Grad-CAM, ensembles."""


def __getattr__(name):  # TEMPORARY bridge, delete at the layout merge (see below)
    """This package shadows the module melanoma/evaluation.py until the layout move renames it
    to melanoma/evaluation/model_files.py; until then, names not found here come from it."""
    import importlib.util
    import sys
    from pathlib import Path

    legacy = Path(__file__).resolve().parent.parent / "evaluation.py"
    if not legacy.is_file() or name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = sys.modules.get("melanoma._evaluation_module")
    if module is None:
        spec = importlib.util.spec_from_file_location("melanoma._evaluation_module", legacy)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return getattr(module, name)
