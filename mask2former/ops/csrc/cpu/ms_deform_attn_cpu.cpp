// CPU kernels of multi-scale deformable attention.
//
// Forward: parallel over batch x queries; each task accumulates the D channels of one head in
// a small buffer (inner loops over D are contiguous and vectorise), so no (N, Lq, M, L, P, D)
// intermediate exists.
// Backward: parallel over (batch, head) pairs, optionally split further into query blocks.
// A (batch, head) pair owns its slice of the value gradient, so the scatter into it needs no
// atomics and no per-thread copy; only query blocks (when there are more threads than pairs)
// write into private buffers that are summed at the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ms_deform_attn_common.h"

namespace mask2former {
namespace {

// Problem sizes; kD > 0 fixes D at compile time so the channel loops unroll fully.
struct Sizes {
  int64_t N, S, M, D, Lq, L, P;
};

template <int kD>
C10_ALWAYS_INLINE int64_t channels(const Sizes& s) {
  return kD > 0 ? kD : s.D;
}

// acc[d] += a * x[d]
template <int kD, typename acc_t, typename scalar_t>
C10_ALWAYS_INLINE void axpy(acc_t* __restrict acc, acc_t a, const scalar_t* __restrict x, int64_t D) {
  const int64_t n = kD > 0 ? kD : D;
  for (int64_t d = 0; d < n; ++d) {
    acc[d] += a * static_cast<acc_t>(x[d]);
  }
}

// sum_d g[d] * x[d]
template <int kD, typename acc_t, typename scalar_t>
C10_ALWAYS_INLINE acc_t dot(const acc_t* __restrict g, const scalar_t* __restrict x, int64_t D) {
  const int64_t n = kD > 0 ? kD : D;
  acc_t sum = 0;
  for (int64_t d = 0; d < n; ++d) {
    sum += g[d] * static_cast<acc_t>(x[d]);
  }
  return sum;
}

// Output rows [begin, end) of the flattened (N * Lq) queries.
template <typename scalar_t, int kD>
void forward_rows(
    const scalar_t* __restrict value,
    const int64_t* shapes,
    const int64_t* starts,
    const scalar_t* __restrict locations,
    const scalar_t* __restrict weights,
    scalar_t* __restrict output,
    const Sizes& s,
    int64_t begin,
    int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t D = channels<kD>(s);
  const int64_t position_stride = s.M * D;  // value is (N, S, M, D)
  std::vector<acc_t> acc(D);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / s.Lq;
    for (int64_t m = 0; m < s.M; ++m) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      const int64_t head_row = row * s.M + m;
      const scalar_t* loc = locations + head_row * s.L * s.P * 2;
      const scalar_t* attn = weights + head_row * s.L * s.P;
      for (int64_t l = 0; l < s.L; ++l) {
        const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
        const scalar_t* level_value = value + ((n * s.S + starts[l]) * s.M + m) * D;
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t k = l * s.P + p;
          int64_t index[4];
          acc_t corner_weight[4], fx, fy;
          if (!bilinear_footprint<acc_t>(
                  static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W, index,
                  corner_weight, fx, fy)) {
            continue;
          }
          const acc_t w = static_cast<acc_t>(attn[k]);
          for (int c = 0; c < 4; ++c) {
            if (index[c] >= 0) {
              axpy<kD>(acc.data(), w * corner_weight[c], level_value + index[c] * position_stride, D);
            }
          }
        }
      }
      scalar_t* out = output + head_row * D;
      for (int64_t d = 0; d < D; ++d) {
        out[d] = static_cast<scalar_t>(acc[d]);
      }
    }
  }
}

// Gradients for queries [q_begin, q_end) of one (batch n, head m) pair. `grad_value` points to
// an (N, S, M, D) buffer in the accumulation type that only this task writes for (n, m).
template <typename scalar_t, int kD>
void backward_head(
    const scalar_t* __restrict grad_output,
    const scalar_t* __restrict value,
    const int64_t* shapes,
    const int64_t* starts,
    const scalar_t* __restrict locations,
    const scalar_t* __restrict weights,
    at::opmath_type<scalar_t>* __restrict grad_value,
    scalar_t* __restrict grad_locations,
    scalar_t* __restrict grad_weights,
    const Sizes& s,
    int64_t n,
    int64_t m,
    int64_t q_begin,
    int64_t q_end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t D = channels<kD>(s);
  const int64_t position_stride = s.M * D;
  std::vector<acc_t> g(D);
  for (int64_t q = q_begin; q < q_end; ++q) {
    const int64_t head_row = (n * s.Lq + q) * s.M + m;
    const scalar_t* grad_out = grad_output + head_row * D;
    for (int64_t d = 0; d < D; ++d) {
      g[d] = static_cast<acc_t>(grad_out[d]);
    }
    const scalar_t* loc = locations + head_row * s.L * s.P * 2;
    const scalar_t* attn = weights + head_row * s.L * s.P;
    scalar_t* grad_loc = grad_locations + head_row * s.L * s.P * 2;
    scalar_t* grad_attn = grad_weights + head_row * s.L * s.P;
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const int64_t level_offset = ((n * s.S + starts[l]) * s.M + m) * D;
      const scalar_t* level_value = value + level_offset;
      acc_t* level_grad_value = grad_value + level_offset;
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t k = l * s.P + p;
        int64_t index[4];
        acc_t corner_weight[4], fx, fy;
        if (!bilinear_footprint<acc_t>(
                static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W, index,
                corner_weight, fx, fy)) {
          grad_attn[k] = scalar_t(0);
          grad_loc[2 * k] = scalar_t(0);
          grad_loc[2 * k + 1] = scalar_t(0);
          continue;
        }
        const acc_t w = static_cast<acc_t>(attn[k]);
        // corner_dot[c] = <grad_out, value at corner c>
        acc_t corner_dot[4] = {0, 0, 0, 0};
        for (int c = 0; c < 4; ++c) {
          if (index[c] >= 0) {
            corner_dot[c] = dot<kD>(g.data(), level_value + index[c] * position_stride, D);
            axpy<kD>(level_grad_value + index[c] * position_stride, w * corner_weight[c], g.data(), D);
          }
        }
        const acc_t one = 1;
        grad_attn[k] = static_cast<scalar_t>(
            corner_weight[0] * corner_dot[0] + corner_weight[1] * corner_dot[1] +
            corner_weight[2] * corner_dot[2] + corner_weight[3] * corner_dot[3]);
        // d(pixel x)/d(loc x) = W, d(pixel y)/d(loc y) = H
        const acc_t grad_x = ((one - fy) * (corner_dot[1] - corner_dot[0]) + fy * (corner_dot[3] - corner_dot[2]));
        const acc_t grad_y = ((one - fx) * (corner_dot[2] - corner_dot[0]) + fx * (corner_dot[3] - corner_dot[1]));
        grad_loc[2 * k] = static_cast<scalar_t>(w * grad_x * static_cast<acc_t>(W));
        grad_loc[2 * k + 1] = static_cast<scalar_t>(w * grad_y * static_cast<acc_t>(H));
      }
    }
  }
}

// Calls f.template operator()<kD>() with kD = D for the common head widths, else 0 (runtime D).
template <typename F>
void dispatch_channels(int64_t D, const F& f) {
  switch (D) {
    case 32:
      f(std::integral_constant<int, 32>());
      break;
    case 64:
      f(std::integral_constant<int, 64>());
      break;
    case 16:
      f(std::integral_constant<int, 16>());
      break;
    default:
      f(std::integral_constant<int, 0>());
  }
}

struct Prepared {
  at::Tensor value, shapes, starts, locations, weights;
  Sizes sizes;
};

Prepared prepare(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn (CPU kernel): tensors must be on the CPU");
  Prepared p{value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
             sampling_locations.contiguous(), attention_weights.contiguous(), Sizes{}};
  p.sizes = Sizes{value.size(0), value.size(1), value.size(2), value.size(3),
                  sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
  check_level_layout(p.shapes.data_ptr<int64_t>(), p.starts.data_ptr<int64_t>(), p.sizes.L, p.sizes.S);
  return p;
}

at::Tensor ms_deform_attn_forward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Prepared in = prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes s = in.sizes;
  at::Tensor output = at::empty({s.N, s.Lq, s.M * s.D}, in.value.options());
  if (output.numel() == 0) {
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    const scalar_t* value_ptr = in.value.const_data_ptr<scalar_t>();
    const scalar_t* loc_ptr = in.locations.const_data_ptr<scalar_t>();
    const scalar_t* attn_ptr = in.weights.const_data_ptr<scalar_t>();
    const int64_t* shapes_ptr = in.shapes.const_data_ptr<int64_t>();
    const int64_t* starts_ptr = in.starts.const_data_ptr<int64_t>();
    scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
    dispatch_channels(s.D, [&](auto kD) {
      at::parallel_for(0, s.N * s.Lq, 1, [&](int64_t begin, int64_t end) {
        forward_rows<scalar_t, decltype(kD)::value>(
            value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, s, begin, end);
      });
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Prepared in = prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes s = in.sizes;
  TORCH_CHECK(
      grad_output.sizes() == at::IntArrayRef({s.N, s.Lq, s.M * s.D}) &&
          grad_output.scalar_type() == in.value.scalar_type() && grad_output.device().is_cpu(),
      "ms_deform_attn_backward: grad_output must be a CPU ", in.value.scalar_type(), " tensor of shape (",
      s.N, ", ", s.Lq, ", ", s.M * s.D, "), got ", grad_output.scalar_type(), " ", grad_output.sizes());
  const at::Tensor grad_out = grad_output.contiguous();
  at::Tensor grad_locations = at::empty_like(in.locations);
  at::Tensor grad_weights = at::empty_like(in.weights);

  // More threads than (batch, head) pairs: split each pair's queries into blocks, each with a
  // private value-gradient buffer.
  const int64_t pairs = s.N * s.M;
  const int64_t blocks = pairs > 0 ? std::max<int64_t>(1, (at::get_num_threads() + pairs - 1) / pairs) : 1;
  const int64_t block_len = (s.Lq + blocks - 1) / blocks;
  const at::ScalarType acc_type = at::toOpMathType(in.value.scalar_type());
  const bool direct = blocks == 1 && acc_type == in.value.scalar_type();
  at::Tensor grad_value_acc = direct ? at::zeros_like(in.value)
                                     : at::zeros({blocks, s.N, s.S, s.M, s.D}, in.value.options().dtype(acc_type));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* grad_out_ptr = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* value_ptr = in.value.const_data_ptr<scalar_t>();
    const scalar_t* loc_ptr = in.locations.const_data_ptr<scalar_t>();
    const scalar_t* attn_ptr = in.weights.const_data_ptr<scalar_t>();
    const int64_t* shapes_ptr = in.shapes.const_data_ptr<int64_t>();
    const int64_t* starts_ptr = in.starts.const_data_ptr<int64_t>();
    acc_t* grad_value_ptr = grad_value_acc.mutable_data_ptr<acc_t>();
    scalar_t* grad_loc_ptr = grad_locations.mutable_data_ptr<scalar_t>();
    scalar_t* grad_attn_ptr = grad_weights.mutable_data_ptr<scalar_t>();
    const int64_t buffer_numel = s.N * s.S * s.M * s.D;
    dispatch_channels(s.D, [&](auto kD) {
      at::parallel_for(0, pairs * blocks, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t block = task % blocks, pair = task / blocks;
          const int64_t q_begin = std::min(s.Lq, block * block_len);
          const int64_t q_end = std::min(s.Lq, q_begin + block_len);
          backward_head<scalar_t, decltype(kD)::value>(
              grad_out_ptr, value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr,
              grad_value_ptr + block * buffer_numel, grad_loc_ptr, grad_attn_ptr, s, pair / s.M, pair % s.M,
              q_begin, q_end);
        }
      });
    });
  });
  at::Tensor grad_value =
      direct ? grad_value_acc : grad_value_acc.sum(0).to(in.value.scalar_type()).view_as(in.value);
  return std::make_tuple(grad_value, grad_locations, grad_weights);
}

}  // namespace

TORCH_LIBRARY_IMPL(mask2former, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace mask2former
