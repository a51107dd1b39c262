// Operator schemas of the multi-scale deformable attention op and the `mask2former._C`
// Python module whose import registers them. Device kernels live in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(mask2former, m) {
  // value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64,
  // sampling_locations (N, Lq, M, L, P, 2) normalised (x, y), attention_weights (N, Lq, M, L, P)
  // -> (N, Lq, M * D)
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  // -> gradients of value, sampling_locations and attention_weights
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}

// A plain module without functions: importing it loads this library, and loading runs the
// static registrations above and in the device files.
static struct PyModuleDef mask2former_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&mask2former_c_module);
}
