"""Model components; importing this package registers them with detectron2."""
