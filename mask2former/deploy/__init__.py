"""Deployment: the exported network (`network`, `export`), its ONNX form of the deformable
attention (`onnx_ms_deform_attn`) and a runtime that needs neither detectron2 nor the model
code (`runtime`, `run`). See docs/DEPLOYMENT.md."""
