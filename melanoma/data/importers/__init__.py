"""Import public dermoscopy data sets (ISIC 2016-2020, HAM10000) into the train/test layout.

    from melanoma.data.importers import class_mapping, import_dataset
    summary = import_dataset("auto", "HAM10000_metadata.csv", "HAM10000_images/", "data/ham",
                             mapping=class_mapping(malignant=["melanoma"]))
    print(summary.describe())
"""
from melanoma.data.importers.build import MANIFEST_COLUMNS, ImportSummary, import_dataset
from melanoma.data.importers.formats import FORMATS, detect_format, read_labels
from melanoma.data.importers.mapping import DEFAULT_EXCLUDED, DIAGNOSES, ClassMapping, class_mapping

__all__ = ["DEFAULT_EXCLUDED", "DIAGNOSES", "FORMATS", "MANIFEST_COLUMNS", "ClassMapping",
           "ImportSummary", "class_mapping", "detect_format", "import_dataset", "read_labels"]
