// Linear layers on the CPU as oneDNN 1×1 convolutions, with the weight gradient as one GEMM.
//
// oneDNN's convolution kernels reach several times OpenBLAS's speed on the skinny matrices of
// transformer layers (K = 64..384) on this CPU class; a linear layer over rows of a [rows, C]
// matrix is exactly a 1×1 convolution over the channels-last tensor [B, C, N, 1] that has the
// same memory (docs/NOTES.md "Performance" 1).
//
// Its backward through libtorch's convolution is fine for the input gradient, but the weight
// gradient (oneDNN's 1×1 backward-weights kernel, a reduction over all rows) ran at 76–120
// GFLOP/s inside a training step against ~210 for the forward on the AMD EPYC, about a tenth
// of the step. Where the shim is built against oneDNN's headers (CONTEXTDIFF_ONEDNN), the
// layer is a custom autograd function: forward and input gradient by the same 1×1
// convolutions, the weight gradient gᵀ·x by oneDNN's sgemm on the rows as they lie in memory
// (docs/NOTES.md "Performance" 10).
#include "common.h"

#include <torch/csrc/autograd/custom_function.h>

#ifdef CONTEXTDIFF_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

namespace ctorch {
namespace {

// x2 [rows, C] (contiguous) · wᵀ (+ b) as a 1×1 convolution over [rows / n, C, n, 1]
// (channels last: the same memory), the result [rows, O] again a view of the output.
at::Tensor rows_conv(const at::Tensor &x2, const at::Tensor &w, const c10::optional<at::Tensor> &b, int64_t n) {
  const int64_t rows = x2.size(0), c = x2.size(1), o = w.size(0);
  auto x4 = x2.view({rows / n, n, 1, c}).permute({0, 3, 1, 2});
  auto y = at::conv2d(x4, w.contiguous().view({o, c, 1, 1}), b);
  return y.permute({0, 2, 3, 1}).reshape({rows, o});
}

#ifdef CONTEXTDIFF_ONEDNN
struct LinearRows : public torch::autograd::Function<LinearRows> {
  // `b` is empty without a bias (autograd functions take no undefined inputs).
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x2, const at::Tensor &w,
                            const at::Tensor &b, int64_t n) {
    const bool bias = b.numel() > 0;
    // The input is only needed for the weight gradient.
    ctx->save_for_backward({w.requires_grad() ? x2 : at::Tensor(), w});
    ctx->saved_data["n"] = n;
    return rows_conv(x2, w, bias ? c10::optional<at::Tensor>(b) : c10::nullopt, n);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x2 = saved[0], &w = saved[1];
    const int64_t n = ctx->saved_data["n"].toInt();
    auto g = grads[0].contiguous();  // [rows, O]
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) gx = rows_conv(g, w.t().contiguous(), c10::nullopt, n);
    if (ctx->needs_input_grad(1)) {
      const int64_t rows = g.size(0), o = g.size(1), c = x2.size(1);
      gw = at::empty({o, c}, g.options());
      // Row-major: gw[O, C] = gᵀ[O, rows] · x[rows, C].
      auto status = dnnl_sgemm('T', 'N', o, c, rows, 1.f, g.data_ptr<float>(), o, x2.data_ptr<float>(), c, 0.f,
                               gw.data_ptr<float>(), c);
      TORCH_CHECK(status == dnnl_success, "oneDNN sgemm failed with status ", (int)status);
    }
    if (ctx->needs_input_grad(2)) gb = g.sum(0);
    return {gx, gw, gb, at::Tensor()};
  }
};
#endif

}  // namespace

at::Tensor linear_as_conv(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b) {
  if (!at::hasMKLDNN() || !x.device().is_cpu() || x.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat ||
      x.dim() < 2 || w.dim() != 2 || x.size(-1) != w.size(1)) {
    return at::linear(x, w, b);
  }
  const int64_t c = x.size(-1), o = w.size(0);
  const int64_t rows = c == 0 ? 0 : x.numel() / c;
  if (rows < 256) return at::linear(x, w, b);
  // Split the rows into B sequences of N: the sequence dimension of a [.., N, C] input, else
  // the largest of 256/128/64 that divides the rows (oneDNN is slow on [1, C, rows, 1]).
  int64_t n = 0;
  if (x.dim() >= 3) {
    n = x.size(-2);
  } else {
    for (int64_t cand : {256, 128, 64}) {
      if (rows % cand == 0) { n = cand; break; }
    }
  }
  if (n <= 0 || rows % n != 0) return at::linear(x, w, b);
  auto sizes = x.sizes().vec();
  sizes.back() = o;
  auto x2 = x.contiguous().view({rows, c});
  const bool has_bias = b.has_value() && b->defined();
#ifdef CONTEXTDIFF_ONEDNN
  const bool grad = c10::GradMode::is_enabled() &&
                    (x.requires_grad() || w.requires_grad() || (has_bias && b->requires_grad()));
  if (grad && w.device().is_cpu() && (!has_bias || (b->device().is_cpu() && b->scalar_type() == at::kFloat)))
    return LinearRows::apply(x2, w.contiguous(), has_bias ? *b : at::empty({0}, x.options()), n).view(sizes);
#endif
  return rows_conv(x2, w, has_bias ? b : c10::nullopt, n).view(sizes);
}

}  // namespace ctorch
