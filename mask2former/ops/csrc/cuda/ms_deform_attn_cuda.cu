// CUDA kernels of multi-scale deformable attention.
//
// One warp per (batch, query, head) row: lanes own channels d = lane, lane + 32, ..., so value
// reads and output writes are coalesced along D and every lane of a warp follows the same
// control flow over levels and points. Accumulation is in float for half/bfloat16 (double for
// double). The backward reduces the per-point dot products across the warp with shuffles and
// scatters the value gradient with atomics into a buffer of the accumulation type.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../ms_deform_attn_common.h"

namespace mask2former {
namespace {

constexpr int kWarpSize = 32;
constexpr int kThreadsPerBlock = 256;

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

template <typename scalar_t>
__global__ void forward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ locations,
    const scalar_t* __restrict__ weights,
    scalar_t* __restrict__ output,
    const Sizes s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t num_rows = s.N * s.Lq * s.M;
  const int64_t warps_in_grid = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  const int64_t position_stride = s.M * s.D;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize; row < num_rows;
       row += warps_in_grid) {
    const int64_t m = row % s.M;
    const int64_t n = row / (s.M * s.Lq);
    const scalar_t* loc = locations + row * s.L * s.P * 2;
    const scalar_t* attn = weights + row * s.L * s.P;
    for (int64_t d = lane; d - lane < s.D; d += kWarpSize) {
      const bool active = d < s.D;
      acc_t acc = 0;
      for (int64_t l = 0; l < s.L; ++l) {
        const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
        const scalar_t* level_value = value + ((n * s.S + starts[l]) * s.M + m) * s.D + d;
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t k = l * s.P + p;
          int64_t index[4];
          acc_t corner_weight[4], fx, fy;
          if (!bilinear_footprint<acc_t>(
                  static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W, index, corner_weight,
                  fx, fy)) {
            continue;
          }
          const acc_t w = static_cast<acc_t>(attn[k]);
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            if (active && index[c] >= 0) {
              acc += w * corner_weight[c] * static_cast<acc_t>(level_value[index[c] * position_stride]);
            }
          }
        }
      }
      if (active) {
        output[row * s.D + d] = static_cast<scalar_t>(acc);
      }
    }
  }
}

template <typename scalar_t>
__global__ void backward_kernel(
    const scalar_t* __restrict__ grad_output,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const scalar_t* __restrict__ locations,
    const scalar_t* __restrict__ weights,
    at::opmath_type<scalar_t>* __restrict__ grad_value,
    scalar_t* __restrict__ grad_locations,
    scalar_t* __restrict__ grad_weights,
    const Sizes s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t num_rows = s.N * s.Lq * s.M;
  const int64_t warps_in_grid = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarpSize;
  const int64_t position_stride = s.M * s.D;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize; row < num_rows;
       row += warps_in_grid) {
    const int64_t m = row % s.M;
    const int64_t n = row / (s.M * s.Lq);
    const scalar_t* loc = locations + row * s.L * s.P * 2;
    const scalar_t* attn = weights + row * s.L * s.P;
    const scalar_t* grad_out = grad_output + row * s.D;
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const int64_t level_offset = ((n * s.S + starts[l]) * s.M + m) * s.D;
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t k = l * s.P + p;
        int64_t index[4];
        acc_t corner_weight[4], fx, fy;
        // uniform across the warp: every lane reads the same location
        if (!bilinear_footprint<acc_t>(
                static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W, index, corner_weight, fx,
                fy)) {
          if (lane == 0) {
            grad_weights[row * s.L * s.P + k] = scalar_t(0);
            grad_locations[(row * s.L * s.P + k) * 2] = scalar_t(0);
            grad_locations[(row * s.L * s.P + k) * 2 + 1] = scalar_t(0);
          }
          continue;
        }
        const acc_t w = static_cast<acc_t>(attn[k]);
        // corner_dot[c] = <grad_out, value at corner c>, partial over this lane's channels
        acc_t corner_dot[4] = {0, 0, 0, 0};
        for (int64_t d = lane; d < s.D; d += kWarpSize) {
          const acc_t g = static_cast<acc_t>(grad_out[d]);
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            if (index[c] >= 0) {
              const int64_t offset = level_offset + index[c] * position_stride + d;
              corner_dot[c] += g * static_cast<acc_t>(value[offset]);
              gpuAtomicAdd(grad_value + offset, w * corner_weight[c] * g);
            }
          }
        }
        const acc_t one = 1;
        const acc_t grad_attn = warp_sum(
            corner_weight[0] * corner_dot[0] + corner_weight[1] * corner_dot[1] + corner_weight[2] * corner_dot[2] +
            corner_weight[3] * corner_dot[3]);
        const acc_t grad_x =
            warp_sum((one - fy) * (corner_dot[1] - corner_dot[0]) + fy * (corner_dot[3] - corner_dot[2]));
        const acc_t grad_y =
            warp_sum((one - fx) * (corner_dot[2] - corner_dot[0]) + fx * (corner_dot[3] - corner_dot[1]));
        if (lane == 0) {
          grad_weights[row * s.L * s.P + k] = static_cast<scalar_t>(grad_attn);
          grad_locations[(row * s.L * s.P + k) * 2] = static_cast<scalar_t>(w * grad_x * static_cast<acc_t>(W));
          grad_locations[(row * s.L * s.P + k) * 2 + 1] = static_cast<scalar_t>(w * grad_y * static_cast<acc_t>(H));
        }
      }
    }
  }
}

unsigned int blocks_for(const Sizes& s) {
  const int64_t warps_per_block = kThreadsPerBlock / kWarpSize;
  const int64_t rows = s.N * s.Lq * s.M;
  return static_cast<unsigned int>(std::min<int64_t>((rows + warps_per_block - 1) / warps_per_block, 1 << 30));
}

at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Prepared in =
      prepare(c10::DeviceType::CUDA, value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes s = in.sizes;
  at::Tensor output = at::empty({s.N, s.Lq, s.M * s.D}, in.value.options());
  if (output.numel() == 0) {
    return output;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(s), kThreadsPerBlock, 0, stream>>>(
        in.value.const_data_ptr<scalar_t>(), in.shapes.const_data_ptr<int64_t>(), in.starts.const_data_ptr<int64_t>(),
        in.locations.const_data_ptr<scalar_t>(), in.weights.const_data_ptr<scalar_t>(),
        output.mutable_data_ptr<scalar_t>(), s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Prepared in =
      prepare(c10::DeviceType::CUDA, value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes s = in.sizes;
  check_grad_output(grad_output, in);
  const at::Tensor grad_out = grad_output.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(in.value.scalar_type());
  // atomics accumulate in the accumulation type, converted once at the end
  at::Tensor grad_value_acc = at::zeros(in.value.sizes(), in.value.options().dtype(acc_type));
  at::Tensor grad_locations = at::empty_like(in.locations);
  at::Tensor grad_weights = at::empty_like(in.weights);
  if (s.N * s.Lq * s.M > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      backward_kernel<scalar_t><<<blocks_for(s), kThreadsPerBlock, 0, stream>>>(
          grad_out.const_data_ptr<scalar_t>(), in.value.const_data_ptr<scalar_t>(),
          in.shapes.const_data_ptr<int64_t>(), in.starts.const_data_ptr<int64_t>(),
          in.locations.const_data_ptr<scalar_t>(), in.weights.const_data_ptr<scalar_t>(),
          grad_value_acc.mutable_data_ptr<at::opmath_type<scalar_t>>(), grad_locations.mutable_data_ptr<scalar_t>(),
          grad_weights.mutable_data_ptr<scalar_t>(), s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return std::make_tuple(grad_value_acc.to(in.value.scalar_type()), grad_locations, grad_weights);
}

}  // namespace

TORCH_LIBRARY_IMPL(mask2former, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace mask2former
