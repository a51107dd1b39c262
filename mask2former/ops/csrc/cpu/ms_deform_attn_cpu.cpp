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
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "../ms_deform_attn_common.h"

namespace mask2former {
namespace {

// Per-task channel buffer: on the stack when D is known at compile time.
template <typename T, int kD>
struct ChannelBuffer {
  explicit ChannelBuffer(int64_t) {}
  T* data() { return values; }
  T values[kD];
};

template <typename T>
struct ChannelBuffer<T, 0> {
  explicit ChannelBuffer(int64_t D) : values(D) {}
  T* data() { return values.data(); }
  std::vector<T> values;
};

// The same kernels compiled for several instruction sets; `cpu_isa()` picks one at run time.
#define KERNEL_NAMESPACE generic
#include "ms_deform_attn_cpu_kernel.h"
#undef KERNEL_NAMESPACE

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MASK2FORMER_X86_VARIANTS 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define KERNEL_NAMESPACE avx2
#include "ms_deform_attn_cpu_kernel.h"
#undef KERNEL_NAMESPACE
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define KERNEL_NAMESPACE avx512
#include "ms_deform_attn_cpu_kernel.h"
#undef KERNEL_NAMESPACE
#pragma GCC pop_options
#endif

enum class Isa { kGeneric, kAvx2, kAvx512 };

// ATen's choice (hardware support, lowered by the ATEN_CPU_CAPABILITY environment variable).
Isa cpu_isa() {
  static const Isa isa = [] {
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") {
      return Isa::kAvx512;
    }
    return capability == "AVX2" ? Isa::kAvx2 : Isa::kGeneric;
  }();
  return isa;
}

template <typename scalar_t, typename loc_t, int kD>
auto forward_rows_for_cpu() {
#ifdef MASK2FORMER_X86_VARIANTS
  switch (cpu_isa()) {
    case Isa::kAvx512:
      return &avx512::forward_rows<scalar_t, loc_t, kD>;
    case Isa::kAvx2:
      return &avx2::forward_rows<scalar_t, loc_t, kD>;
    default:
      break;
  }
#endif
  return &generic::forward_rows<scalar_t, loc_t, kD>;
}

template <typename scalar_t, typename loc_t, int kD>
auto backward_head_for_cpu() {
#ifdef MASK2FORMER_X86_VARIANTS
  switch (cpu_isa()) {
    case Isa::kAvx512:
      return &avx512::backward_head<scalar_t, loc_t, kD>;
    case Isa::kAvx2:
      return &avx2::backward_head<scalar_t, loc_t, kD>;
    default:
      break;
  }
#endif
  return &generic::backward_head<scalar_t, loc_t, kD>;
}

// Calls f(loc_t{}) with loc_t = scalar_t, or float for float32 locations under half or bfloat16
// values (what autocast gives: the kernel then reads neither a widened copy of the values nor
// rounded locations).
template <typename scalar_t, typename F>
void dispatch_locations(const at::Tensor& locations, const F& f) {
  if (!std::is_same<scalar_t, float>::value && locations.scalar_type() == at::kFloat) {
    f(float{});
  } else {
    f(scalar_t{});
  }
}

// Calls f(std::integral_constant<int, kD>) with kD = D for the usual head width, else 0 (runtime D).
template <typename F>
void dispatch_channels(int64_t D, const F& f) {
  if (D == 32) {
    f(std::integral_constant<int, 32>());
  } else {
    f(std::integral_constant<int, 0>());
  }
}

at::Tensor ms_deform_attn_forward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Prepared in = prepare(
      c10::DeviceType::CPU, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
      /*float32_locations=*/true);
  const Sizes s = in.sizes;
  at::Tensor output = at::empty({s.N, s.Lq, s.M * s.D}, in.value.options());
  if (output.numel() == 0) {
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    const scalar_t* value_ptr = in.value.const_data_ptr<scalar_t>();
    const scalar_t* attn_ptr = in.weights.const_data_ptr<scalar_t>();
    const int64_t* shapes_ptr = in.shapes.const_data_ptr<int64_t>();
    const int64_t* starts_ptr = in.starts.const_data_ptr<int64_t>();
    scalar_t* out_ptr = output.mutable_data_ptr<scalar_t>();
    dispatch_locations<scalar_t>(in.locations, [&](auto loc_type) {
      using loc_t = decltype(loc_type);
      const loc_t* loc_ptr = in.locations.const_data_ptr<loc_t>();
      dispatch_channels(s.D, [&](auto kD) {
        const auto forward_rows = forward_rows_for_cpu<scalar_t, loc_t, decltype(kD)::value>();
        at::parallel_for(0, s.N * s.Lq, 1, [&](int64_t begin, int64_t end) {
          forward_rows(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr, s, begin, end);
        });
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
  const Prepared in = prepare(
      c10::DeviceType::CPU, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
      /*float32_locations=*/true);
  const Sizes s = in.sizes;
  check_grad_output(grad_output, in);
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
    const scalar_t* attn_ptr = in.weights.const_data_ptr<scalar_t>();
    const int64_t* shapes_ptr = in.shapes.const_data_ptr<int64_t>();
    const int64_t* starts_ptr = in.starts.const_data_ptr<int64_t>();
    acc_t* grad_value_ptr = grad_value_acc.mutable_data_ptr<acc_t>();
    scalar_t* grad_attn_ptr = grad_weights.mutable_data_ptr<scalar_t>();
    const int64_t buffer_numel = s.N * s.S * s.M * s.D;
    dispatch_locations<scalar_t>(in.locations, [&](auto loc_type) {
      using loc_t = decltype(loc_type);
      const loc_t* loc_ptr = in.locations.const_data_ptr<loc_t>();
      loc_t* grad_loc_ptr = grad_locations.mutable_data_ptr<loc_t>();
      dispatch_channels(s.D, [&](auto kD) {
        const auto backward_head = backward_head_for_cpu<scalar_t, loc_t, decltype(kD)::value>();
        at::parallel_for(0, pairs * blocks, 1, [&](int64_t begin, int64_t end) {
          for (int64_t task = begin; task < end; ++task) {
            const int64_t block = task % blocks, pair = task / blocks;
            const int64_t q_begin = std::min(s.Lq, block * block_len);
            const int64_t q_end = std::min(s.Lq, q_begin + block_len);
            backward_head(
                grad_out_ptr, value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr,
                grad_value_ptr + block * buffer_numel, grad_loc_ptr, grad_attn_ptr, s, pair / s.M, pair % s.M,
                q_begin, q_end);
          }
        });
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
