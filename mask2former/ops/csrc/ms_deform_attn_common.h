// Pieces shared by the CPU and CUDA kernels: the argument checks (the only ones of the eager
// op; the fake implementation in ops/_extension.py checks the same while tracing), the
// prepared arguments, and the bilinear footprint of one sampling point.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace mask2former {

// Checks shapes, dtypes and devices of the op's arguments (not the values of the shapes):
// a wrong shape raises ValueError in Python, a wrong dtype TypeError.
// With `float32_locations`, sampling_locations may also be float32 under half or bfloat16
// values and weights: locations in [0, 1] need float precision to address a pixel of a wide map.
inline void check_ms_deform_attn_args(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    bool float32_locations = false) {
  TORCH_CHECK_VALUE(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK_VALUE(
      sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
      "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), got ",
      sampling_locations.sizes());
  const int64_t N = value.size(0), M = value.size(2);
  const int64_t Lq = sampling_locations.size(1), L = sampling_locations.size(3),
                P = sampling_locations.size(4);
  TORCH_CHECK_VALUE(
      sampling_locations.size(0) == N && sampling_locations.size(2) == M,
      "ms_deform_attn: sampling_locations ", sampling_locations.sizes(),
      " does not match value ", value.sizes(), " in batch or heads");
  TORCH_CHECK_VALUE(
      attention_weights.sizes() == at::IntArrayRef({N, Lq, M, L, P}),
      "ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = (", N, ", ", Lq, ", ", M,
      ", ", L, ", ", P, "), got ", attention_weights.sizes());
  TORCH_CHECK_VALUE(
      spatial_shapes.dim() == 2 && spatial_shapes.size(0) == L && spatial_shapes.size(1) == 2,
      "ms_deform_attn: spatial_shapes must be (L, 2) with L = ", L, ", got ", spatial_shapes.sizes());
  TORCH_CHECK_VALUE(
      level_start_index.dim() == 1 && level_start_index.size(0) == L,
      "ms_deform_attn: level_start_index must be (L,) with L = ", L, ", got ",
      level_start_index.sizes());
  TORCH_CHECK_TYPE(
      spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn: spatial_shapes and level_start_index must be int64, got ", spatial_shapes.scalar_type(),
      " and ", level_start_index.scalar_type());
  TORCH_CHECK_TYPE(
      value.is_floating_point(), "ms_deform_attn: value must be a floating-point tensor, got ", value.scalar_type());
  const bool reduced = value.scalar_type() == at::kHalf || value.scalar_type() == at::kBFloat16;
  TORCH_CHECK_TYPE(
      value.scalar_type() == attention_weights.scalar_type() &&
          (value.scalar_type() == sampling_locations.scalar_type() ||
           (float32_locations && reduced && sampling_locations.scalar_type() == at::kFloat)),
      "ms_deform_attn: value, sampling_locations and attention_weights must share a dtype",
      float32_locations ? " (or be half/bfloat16 with float32 sampling_locations)" : "", ", got ",
      value.scalar_type(), ", ", sampling_locations.scalar_type(), " and ", attention_weights.scalar_type());
  TORCH_CHECK(
      value.device() == sampling_locations.device() && value.device() == attention_weights.device() &&
          value.device() == spatial_shapes.device() && value.device() == level_start_index.device(),
      "ms_deform_attn: all arguments must be on the same device");
}

// Checks that every level lies inside value's S positions (kernels index memory with them).
// `shapes` and `starts` are host pointers to L (H, W) pairs and L start indices.
inline void check_level_layout(const int64_t* shapes, const int64_t* starts, int64_t L, int64_t S) {
  for (int64_t l = 0; l < L; ++l) {
    const int64_t H = shapes[2 * l], W = shapes[2 * l + 1], start = starts[l];
    TORCH_CHECK(
        H >= 0 && W >= 0 && start >= 0 && start + H * W <= S,
        "ms_deform_attn: level ", l, " with spatial shape (", H, ", ", W, ") starting at ", start,
        " does not fit in value's S = ", S, " positions");
  }
}

// Problem sizes of one call; the CPU kernels may also fix D at compile time.
struct Sizes {
  int64_t N, S, M, D, Lq, L, P;
};

// The op's arguments, checked and contiguous, with their sizes.
struct Prepared {
  at::Tensor value, shapes, starts, locations, weights;
  Sizes sizes;
};

// Checks the arguments of a kernel for `device_type` tensors and makes them contiguous;
// `float32_locations` as in check_ms_deform_attn_args.
inline Prepared prepare(
    c10::DeviceType device_type,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    bool float32_locations = false) {
  check_ms_deform_attn_args(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, float32_locations);
  TORCH_CHECK(
      value.device().type() == device_type, "ms_deform_attn (", device_type, " kernel): tensors must be on a ",
      device_type, " device, got ", value.device());
  Prepared p{value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
             sampling_locations.contiguous(), attention_weights.contiguous(), Sizes{}};
  p.sizes = Sizes{value.size(0), value.size(1), value.size(2), value.size(3),
                  sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
  // The kernels index memory with the level layout: check it on the host (L small numbers;
  // `cpu()` copies nothing for CPU tensors).
  const at::Tensor shapes_host = p.shapes.cpu(), starts_host = p.starts.cpu();
  check_level_layout(shapes_host.const_data_ptr<int64_t>(), starts_host.const_data_ptr<int64_t>(), p.sizes.L, p.sizes.S);
  return p;
}

// Checks the backward's grad_output: (N, Lq, M * D), of value's dtype and on its device.
inline void check_grad_output(const at::Tensor& grad_output, const Prepared& in) {
  const Sizes& s = in.sizes;
  TORCH_CHECK(
      grad_output.sizes() == at::IntArrayRef({s.N, s.Lq, s.M * s.D}) &&
          grad_output.scalar_type() == in.value.scalar_type() && grad_output.device() == in.value.device(),
      "ms_deform_attn_backward: grad_output must be a ", in.value.scalar_type(), " tensor of shape (", s.N, ", ",
      s.Lq, ", ", s.M * s.D, ") on ", in.value.device(), ", got ", grad_output.scalar_type(), " ",
      grad_output.sizes(), " on ", grad_output.device());
}

// Bilinear footprint of a normalised location (x, y) on an H x W map, with pixel centres at
// (i + 0.5) / size and zeros outside the map (grid_sample, align_corners=False).
// Returns false when no corner lies inside (the point contributes nothing). Otherwise
// `index[c]` is the flattened position y * W + x of corner c (order: top-left, top-right,
// bottom-left, bottom-right) or -1 when that corner is outside, `weight[c]` its bilinear
// weight, and (fx, fy) the fractional position between the corners.
template <typename acc_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE bool bilinear_footprint(
    acc_t loc_x, acc_t loc_y, int64_t H, int64_t W, int64_t index[4], acc_t weight[4], acc_t& fx, acc_t& fy) {
  const acc_t x = loc_x * static_cast<acc_t>(W) - static_cast<acc_t>(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(H) - static_cast<acc_t>(0.5);
  // Written so that NaN locations fail the test too.
  if (!(x >= static_cast<acc_t>(-1) && y >= static_cast<acc_t>(-1) && x < static_cast<acc_t>(W) &&
        y < static_cast<acc_t>(H))) {
    return false;
  }
#if defined(__CUDACC__)
  const acc_t x0f = floor(x), y0f = floor(y);
#else
  const acc_t x0f = std::floor(x), y0f = std::floor(y);
#endif
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
  fx = x - x0f;
  fy = y - y0f;
  const bool left = x0 >= 0, right = x0 + 1 < W, top = y0 >= 0, bottom = y0 + 1 < H;
  const acc_t one = static_cast<acc_t>(1);
  weight[0] = (one - fy) * (one - fx);
  weight[1] = (one - fy) * fx;
  weight[2] = fy * (one - fx);
  weight[3] = fy * fx;
  index[0] = (top && left) ? y0 * W + x0 : -1;
  index[1] = (top && right) ? y0 * W + x0 + 1 : -1;
  index[2] = (bottom && left) ? (y0 + 1) * W + x0 : -1;
  index[3] = (bottom && right) ? (y0 + 1) * W + x0 + 1 : -1;
  return true;
}

}  // namespace mask2former
