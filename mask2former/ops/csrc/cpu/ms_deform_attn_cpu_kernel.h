// Kernel bodies of the CPU op, included once per instruction set by ms_deform_attn_cpu.cpp
// (inside `#pragma GCC target` regions) so that the channel loops are vectorised with the
// widest vectors the CPU has. Deliberately no include guard; only raw pointers in here.
// Expects `Sizes`, `ChannelBuffer` and the headers of ms_deform_attn_cpu.cpp.
//
// Both kernels visit the four bilinear corners of a point in ONE pass over the D channels.
// Corners outside the map read a zero row (and, in the backward, write a scratch row), so the
// channel loops have no branches. The backward's three reductions over D are vectorised with
// `omp simd reduction` (plain loops would stay scalar: floating-point sums may not be
// reordered without it). `loc_t` is the locations' type: scalar_t, or float under half or
// bfloat16 values.

namespace KERNEL_NAMESPACE {

// Output rows [begin, end) of the flattened (N * Lq) queries.
template <typename scalar_t, typename loc_t, int kD>
void forward_rows(
    const scalar_t* __restrict value,
    const int64_t* shapes,
    const int64_t* starts,
    const loc_t* __restrict locations,
    const scalar_t* __restrict weights,
    scalar_t* __restrict output,
    const Sizes& s,
    int64_t begin,
    int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t D = kD > 0 ? kD : s.D;
  const int64_t position_stride = s.M * D;  // value is (N, S, M, D)
  ChannelBuffer<acc_t, kD> acc_buffer(D);
  ChannelBuffer<scalar_t, kD> zero_buffer(D);
  acc_t* __restrict acc = acc_buffer.data();
  const scalar_t* zeros = zero_buffer.data();
  for (int64_t d = 0; d < D; ++d) {
    zero_buffer.data()[d] = scalar_t(0);
  }
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / s.Lq;
    for (int64_t m = 0; m < s.M; ++m) {
      for (int64_t d = 0; d < D; ++d) {
        acc[d] = 0;
      }
      const int64_t head_row = row * s.M + m;
      const loc_t* loc = locations + head_row * s.L * s.P * 2;
      const scalar_t* attn = weights + head_row * s.L * s.P;
      for (int64_t l = 0; l < s.L; ++l) {
        const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
        const scalar_t* level_value = value + ((n * s.S + starts[l]) * s.M + m) * D;
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
          const scalar_t* __restrict v0 = index[0] >= 0 ? level_value + index[0] * position_stride : zeros;
          const scalar_t* __restrict v1 = index[1] >= 0 ? level_value + index[1] * position_stride : zeros;
          const scalar_t* __restrict v2 = index[2] >= 0 ? level_value + index[2] * position_stride : zeros;
          const scalar_t* __restrict v3 = index[3] >= 0 ? level_value + index[3] * position_stride : zeros;
          const acc_t a0 = w * corner_weight[0], a1 = w * corner_weight[1], a2 = w * corner_weight[2],
                      a3 = w * corner_weight[3];
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) {
            acc[d] += a0 * static_cast<acc_t>(v0[d]) + a1 * static_cast<acc_t>(v1[d]) +
                a2 * static_cast<acc_t>(v2[d]) + a3 * static_cast<acc_t>(v3[d]);
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
template <typename scalar_t, typename loc_t, int kD>
void backward_head(
    const scalar_t* __restrict grad_output,
    const scalar_t* __restrict value,
    const int64_t* shapes,
    const int64_t* starts,
    const loc_t* __restrict locations,
    const scalar_t* __restrict weights,
    at::opmath_type<scalar_t>* __restrict grad_value,
    loc_t* __restrict grad_locations,
    scalar_t* __restrict grad_weights,
    const Sizes& s,
    int64_t n,
    int64_t m,
    int64_t q_begin,
    int64_t q_end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t D = kD > 0 ? kD : s.D;
  const int64_t position_stride = s.M * D;
  ChannelBuffer<acc_t, kD> grad_buffer(D);
  ChannelBuffer<scalar_t, kD> zero_buffer(D);
  // one scratch row per corner, so the four gradient rows written in a pass never alias
  ChannelBuffer<acc_t, kD> scratch_buffers[4] = {
      ChannelBuffer<acc_t, kD>(D), ChannelBuffer<acc_t, kD>(D), ChannelBuffer<acc_t, kD>(D),
      ChannelBuffer<acc_t, kD>(D)};
  acc_t* __restrict g = grad_buffer.data();
  const scalar_t* zeros = zero_buffer.data();
  for (int64_t d = 0; d < D; ++d) {
    zero_buffer.data()[d] = scalar_t(0);
    for (auto& scratch : scratch_buffers) {
      scratch.data()[d] = acc_t(0);  // keeps the discarded sums small and finite
    }
  }
  for (int64_t q = q_begin; q < q_end; ++q) {
    const int64_t head_row = (n * s.Lq + q) * s.M + m;
    const scalar_t* grad_out = grad_output + head_row * D;
    for (int64_t d = 0; d < D; ++d) {
      g[d] = static_cast<acc_t>(grad_out[d]);
    }
    const loc_t* loc = locations + head_row * s.L * s.P * 2;
    const scalar_t* attn = weights + head_row * s.L * s.P;
    loc_t* grad_loc = grad_locations + head_row * s.L * s.P * 2;
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
                static_cast<acc_t>(loc[2 * k]), static_cast<acc_t>(loc[2 * k + 1]), H, W, index, corner_weight, fx,
                fy)) {
          grad_attn[k] = scalar_t(0);
          grad_loc[2 * k] = loc_t(0);
          grad_loc[2 * k + 1] = loc_t(0);
          continue;
        }
        const acc_t w = static_cast<acc_t>(attn[k]);
        const scalar_t* __restrict v0 = index[0] >= 0 ? level_value + index[0] * position_stride : zeros;
        const scalar_t* __restrict v1 = index[1] >= 0 ? level_value + index[1] * position_stride : zeros;
        const scalar_t* __restrict v2 = index[2] >= 0 ? level_value + index[2] * position_stride : zeros;
        const scalar_t* __restrict v3 = index[3] >= 0 ? level_value + index[3] * position_stride : zeros;
        acc_t* __restrict gv0 = index[0] >= 0 ? level_grad_value + index[0] * position_stride : scratch_buffers[0].data();
        acc_t* __restrict gv1 = index[1] >= 0 ? level_grad_value + index[1] * position_stride : scratch_buffers[1].data();
        acc_t* __restrict gv2 = index[2] >= 0 ? level_grad_value + index[2] * position_stride : scratch_buffers[2].data();
        acc_t* __restrict gv3 = index[3] >= 0 ? level_grad_value + index[3] * position_stride : scratch_buffers[3].data();
        const acc_t cw0 = corner_weight[0], cw1 = corner_weight[1], cw2 = corner_weight[2], cw3 = corner_weight[3];
        const acc_t a0 = w * cw0, a1 = w * cw1, a2 = w * cw2, a3 = w * cw3;
        const acc_t one = 1;
        // <grad_out, sampled value> and <grad_out, d(sampled value)/d(pixel x or y)>
        acc_t dot_sample = 0, dot_dx = 0, dot_dy = 0;
#pragma omp simd reduction(+ : dot_sample, dot_dx, dot_dy)
        for (int64_t d = 0; d < D; ++d) {
          const acc_t gd = g[d];
          const acc_t x0 = static_cast<acc_t>(v0[d]), x1 = static_cast<acc_t>(v1[d]), x2 = static_cast<acc_t>(v2[d]),
                      x3 = static_cast<acc_t>(v3[d]);
          dot_sample += gd * (cw0 * x0 + cw1 * x1 + cw2 * x2 + cw3 * x3);
          dot_dx += gd * ((one - fy) * (x1 - x0) + fy * (x3 - x2));
          dot_dy += gd * ((one - fx) * (x2 - x0) + fx * (x3 - x1));
          gv0[d] += a0 * gd;
          gv1[d] += a1 * gd;
          gv2[d] += a2 * gd;
          gv3[d] += a3 * gd;
        }
        grad_attn[k] = static_cast<scalar_t>(dot_sample);
        // d(pixel x)/d(loc x) = W, d(pixel y)/d(loc y) = H
        grad_loc[2 * k] = static_cast<loc_t>(w * dot_dx * static_cast<acc_t>(W));
        grad_loc[2 * k + 1] = static_cast<loc_t>(w * dot_dy * static_cast<acc_t>(H));
      }
    }
  }
}

}  // namespace KERNEL_NAMESPACE
