"""Where a model looks: Grad-CAM heat maps on every Keras backend
(:mod:`melanoma.explain.gradcam`) and the check that they follow the lesion on the generated
data, whose lesion masks are known (:mod:`melanoma.explain.localisation`).

Above :mod:`melanoma.models` (it loads and runs models) and below :mod:`melanoma.reporting`
(the report's galleries draw these maps).
"""
