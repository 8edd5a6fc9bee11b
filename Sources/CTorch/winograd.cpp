// 3×3 convolutions by oneDNN's Winograd algorithm (F(4×4, 3×3): 2.25× fewer multiplications
// than the direct algorithm), forward and backward, as a custom autograd function.
//
// libtorch 1.13 always asks oneDNN for the direct algorithm. Debian's libtorch links the
// system's libdnnl (2.6), so the shim can call the same library with the Winograd algorithm
// where its headers are installed (libdnnl-dev; Package.swift defines CONTEXTDIFF_ONEDNN then).
// oneDNN implements Winograd for float32 on AVX-512 cores, for channel counts that are
// multiples of 16; everything else (other CPUs, shapes, dtypes, bf16 scopes, CUDA, a libtorch
// without the system oneDNN) takes libtorch's own convolution. Measured per training step of
// the shipped model on the AMD EPYC (docs/NOTES.md "Performance" 6).
//
// Tensors stay in libtorch's NCHW layout between layers; each call reorders its operands into
// the blocked layouts the Winograd kernels read and its result back. Primitives (and their
// reorders) are created once per shape and kept; every execution gets its own scratchpad and
// buffers, so calls from several threads are safe.
#include "common.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#ifdef CONTEXTDIFF_ONEDNN
#include "onednn.h"
#endif

namespace ctorch {

static std::atomic<bool> g_winograd{true};
static std::atomic<int64_t> g_winograd_calls{0};

#ifdef CONTEXTDIFF_ONEDNN
namespace {
using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

// A reorder between a plain (libtorch) layout and a primitive's, created only where they differ.
struct Reorder {
  memory::desc from, to;
  std::unique_ptr<reorder> prim;
  Reorder() = default;
  Reorder(const memory::desc &f, const memory::desc &t) : from(f), to(t) {
    if (f != t) prim = std::make_unique<reorder>(reorder::primitive_desc(cpu_engine(), f, cpu_engine(), t));
  }
};

// Buffers of one execution, held by libtorch's allocator.
struct Buffers {
  std::vector<at::Tensor> held;
  void *alloc(const memory::desc &d) {
    held.push_back(at::empty({(int64_t)((d.get_size() + 3) / 4)}, at::kFloat));
    return held.back().data_ptr();
  }
};

// `plain` data in the primitive's layout: the tensor's own memory if the layouts agree.
memory into(const Reorder &r, void *plain, stream &s, Buffers &b) {
  memory src(r.from, cpu_engine(), plain);
  if (!r.prim) return src;
  memory dst(r.to, cpu_engine(), b.alloc(r.to));
  r.prim->execute(s, src, dst);
  return dst;
}
// A primitive's output memory, and the reorder that brings it to `plain` afterwards.
memory out_of(const Reorder &r, void *plain, Buffers &b) {
  return r.prim ? memory(r.from, cpu_engine(), b.alloc(r.from)) : memory(r.from, cpu_engine(), plain);
}
void finish(const Reorder &r, memory &m, void *plain, stream &s) {
  if (!r.prim) return;
  memory dst(r.to, cpu_engine(), plain);
  r.prim->execute(s, m, dst);
}

// `threads`: the caller's intra-op threads. A oneDNN primitive splits its work for the thread
// count it was made with; a helper thread running one shard of a batch on one thread
// (Torch.concurrently) needs its own, or each call would open a team of the full count.
struct Key {
  int64_t n, ic, h, w, oc;
  bool bias;
  int threads;
  bool operator<(const Key &o) const {
    return std::tie(n, ic, h, w, oc, bias, threads) < std::tie(o.n, o.ic, o.h, o.w, o.oc, o.bias, o.threads);
  }
};

struct Plan {
  memory::desc src, wei, dst, bias;  // plain layouts
  convolution_forward::primitive_desc fwd_pd;
  std::unique_ptr<convolution_forward> fwd;
  Reorder fwd_src, fwd_wei, fwd_dst;
  // Backward primitives, made at the first backward pass (sampling never needs them).
  std::once_flag backward_once;
  std::unique_ptr<convolution_backward_data> bwd_data;
  std::unique_ptr<convolution_backward_weights> bwd_weights;
  memory::desc bwd_data_scratch, bwd_weights_scratch;
  Reorder bd_diff_dst, bd_wei, bd_diff_src, bw_src, bw_diff_dst, bw_diff_wei;
};

const memory::dims kStrides = {1, 1}, kPadding = {1, 1};

memory::desc any(const memory::dims &d) { return memory::desc(d, dt::f32, tag::any); }

// A new plan for `k`, or nullptr where oneDNN has no Winograd kernel for this shape on this CPU.
std::unique_ptr<Plan> make_plan(const Key &k) {
  try {
    auto plan = std::make_unique<Plan>();
    plan->src = memory::desc({k.n, k.ic, k.h, k.w}, dt::f32, tag::nchw);
    plan->wei = memory::desc({k.oc, k.ic, 3, 3}, dt::f32, tag::oihw);
    plan->dst = memory::desc({k.n, k.oc, k.h, k.w}, dt::f32, tag::nchw);
    plan->bias = memory::desc({k.oc}, dt::f32, tag::x);
    primitive_attr attr;
    attr.set_scratchpad_mode(scratchpad_mode::user);
    auto d = k.bias ? convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_winograd,
                                                any(plan->src.dims()), any(plan->wei.dims()), plan->bias,
                                                any(plan->dst.dims()), kStrides, kPadding, kPadding)
                    : convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_winograd,
                                                any(plan->src.dims()), any(plan->wei.dims()), any(plan->dst.dims()),
                                                kStrides, kPadding, kPadding);
    plan->fwd_pd = convolution_forward::primitive_desc(d, attr, cpu_engine());
    plan->fwd = std::make_unique<convolution_forward>(plan->fwd_pd);
    plan->fwd_src = Reorder(plan->src, plan->fwd_pd.src_desc());
    plan->fwd_wei = Reorder(plan->wei, plan->fwd_pd.weights_desc());
    plan->fwd_dst = Reorder(plan->fwd_pd.dst_desc(), plan->dst);
    return plan;
  } catch (const dnnl::error &) {
    return nullptr;  // libtorch's convolution from now on for this shape
  }
}

// nullptr where oneDNN has no Winograd kernel for this shape (remembered), or the cache is full.
Plan *plan_for(const Key &k) {
  static PlanCache<Key, Plan> plans(256);
  return plans.get(k, [&] { return make_plan(k); });
}

void make_backward(Plan &p, bool bias) {
  primitive_attr attr;
  attr.set_scratchpad_mode(scratchpad_mode::user);
  auto bd = convolution_backward_data::desc(algorithm::convolution_winograd, any(p.src.dims()), any(p.wei.dims()),
                                            any(p.dst.dims()), kStrides, kPadding, kPadding);
  auto bd_pd = convolution_backward_data::primitive_desc(bd, attr, cpu_engine(), p.fwd_pd);
  auto bw = bias ? convolution_backward_weights::desc(algorithm::convolution_winograd, any(p.src.dims()),
                                                      any(p.wei.dims()), p.bias, any(p.dst.dims()), kStrides,
                                                      kPadding, kPadding)
                 : convolution_backward_weights::desc(algorithm::convolution_winograd, any(p.src.dims()),
                                                      any(p.wei.dims()), any(p.dst.dims()), kStrides, kPadding,
                                                      kPadding);
  auto bw_pd = convolution_backward_weights::primitive_desc(bw, attr, cpu_engine(), p.fwd_pd);
  p.bwd_data = std::make_unique<convolution_backward_data>(bd_pd);
  p.bwd_weights = std::make_unique<convolution_backward_weights>(bw_pd);
  p.bwd_data_scratch = bd_pd.scratchpad_desc();
  p.bwd_weights_scratch = bw_pd.scratchpad_desc();
  p.bd_diff_dst = Reorder(p.dst, bd_pd.diff_dst_desc());
  p.bd_wei = Reorder(p.wei, bd_pd.weights_desc());
  p.bd_diff_src = Reorder(bd_pd.diff_src_desc(), p.src);
  p.bw_src = Reorder(p.src, bw_pd.src_desc());
  p.bw_diff_dst = Reorder(p.dst, bw_pd.diff_dst_desc());
  p.bw_diff_wei = Reorder(bw_pd.diff_weights_desc(), p.wei);
}

Key key_of(const at::Tensor &x, const at::Tensor &w, bool bias) {
  return Key{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), bias, at::get_num_threads()};
}

// `kept_src`: also returns the input in the primitive's layout (for the backward pass), or an
// undefined tensor where that layout is libtorch's own.
at::Tensor conv_forward(Plan &p, const at::Tensor &x, const at::Tensor &w, const at::Tensor &b,
                        at::Tensor *kept_src = nullptr) {
  auto &s = cpu_stream();
  Buffers buf;
  auto out = at::empty(p.dst.dims(), x.options());
  memory src = into(p.fwd_src, x.data_ptr(), s, buf);
  if (kept_src != nullptr && p.fwd_src.prim) *kept_src = buf.held.back();
  memory wei = into(p.fwd_wei, w.data_ptr(), s, buf);
  memory dst = out_of(p.fwd_dst, out.data_ptr(), buf);
  memory scratch(p.fwd_pd.scratchpad_desc(), cpu_engine(), buf.alloc(p.fwd_pd.scratchpad_desc()));
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
  if (b.defined()) args[DNNL_ARG_BIAS] = memory(p.bias, cpu_engine(), b.data_ptr());
  p.fwd->execute(s, args);
  finish(p.fwd_dst, dst, out.data_ptr(), s);
  s.wait();
  return out;
}

at::Tensor backward_data(Plan &p, memory &diff_dst, const at::Tensor &w, stream &s, Buffers &buf) {
  auto gx = at::empty(p.src.dims(), w.options());
  memory wei = into(p.bd_wei, w.data_ptr(), s, buf);
  memory diff_src = out_of(p.bd_diff_src, gx.data_ptr(), buf);
  memory scratch(p.bwd_data_scratch, cpu_engine(), buf.alloc(p.bwd_data_scratch));
  p.bwd_data->execute(s, {{DNNL_ARG_DIFF_DST, diff_dst},
                          {DNNL_ARG_WEIGHTS, wei},
                          {DNNL_ARG_DIFF_SRC, diff_src},
                          {DNNL_ARG_SCRATCHPAD, scratch}});
  finish(p.bd_diff_src, diff_src, gx.data_ptr(), s);
  return gx;
}

// `src`: the forward input, in libtorch's layout or (`blocked`) already in the primitive's.
std::pair<at::Tensor, at::Tensor> backward_weights(Plan &p, memory &diff_dst, const at::Tensor &src, bool blocked,
                                                   bool bias, stream &s, Buffers &buf) {
  auto gw = at::empty(p.wei.dims(), src.options());
  at::Tensor gb = bias ? at::empty(p.bias.dims(), src.options()) : at::Tensor();
  memory src_m = blocked ? memory(p.bw_src.to, cpu_engine(), src.data_ptr()) : into(p.bw_src, src.data_ptr(), s, buf);
  memory diff_wei = out_of(p.bw_diff_wei, gw.data_ptr(), buf);
  memory scratch(p.bwd_weights_scratch, cpu_engine(), buf.alloc(p.bwd_weights_scratch));
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src_m},
                                          {DNNL_ARG_DIFF_DST, diff_dst},
                                          {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                                          {DNNL_ARG_SCRATCHPAD, scratch}};
  if (bias) args[DNNL_ARG_DIFF_BIAS] = memory(p.bias, cpu_engine(), gb.data_ptr());
  p.bwd_weights->execute(s, args);
  finish(p.bw_diff_wei, diff_wei, gw.data_ptr(), s);
  return {gw, gb};
}

// The forward pass keeps what the backward pass reads: the weight, and (only where the weight or
// bias needs a gradient) the input in the blocked layout it was reordered to anyway, so the
// backward-weights pass does not reorder it again; the Winograd convolutions' inputs (a SiLU's
// output, an upsampling's) are read by nothing else, so this holds no more memory than keeping
// the input itself. The upstream gradient is reordered once for both backward passes.
struct WinogradConv2d : public torch::autograd::Function<WinogradConv2d> {
  // Without a bias, `b` is an empty tensor (autograd functions take no undefined inputs).
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x, const at::Tensor &w,
                            const at::Tensor &b) {
    const bool bias = b.numel() > 0;
    Plan &p = *plan_for(key_of(x, w, bias));
    std::call_once(p.backward_once, [&] { make_backward(p, bias); });
    const bool weight_grads = w.requires_grad() || (bias && b.requires_grad());
    // The blocked input serves the backward-weights pass where that pass reads the layout the
    // forward pass wrote (the same primitive family: it does).
    const bool keep_blocked = weight_grads && p.fwd_src.prim && p.bw_src.to == p.fwd_src.to;
    at::Tensor blocked;
    auto out = conv_forward(p, x, w, bias ? b : at::Tensor(), keep_blocked ? &blocked : nullptr);
    // Saved variables (not saved_data): released as soon as the backward pass has run.
    ctx->save_for_backward({w, !weight_grads ? at::Tensor() : keep_blocked ? blocked : x});
    ctx->saved_data["bias"] = bias;
    ctx->saved_data["blocked"] = keep_blocked;
    ctx->saved_data["key"] = std::vector<int64_t>{x.size(0), x.size(1), x.size(2), x.size(3)};
    ctx->saved_data["plan"] = (int64_t)(intptr_t)&p;  // plans live as long as the process
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &w = saved[0], &src = saved[1];
    const bool bias = ctx->saved_data["bias"].toBool(), blocked = ctx->saved_data["blocked"].toBool();
    const auto dims = ctx->saved_data["key"].toIntVector();
    auto &forward = *(Plan *)(intptr_t)ctx->saved_data["plan"].toInt();
    // The plan for this thread's count (the forward pass's where none can be made: a full cache).
    Plan *own = plan_for(Key{dims[0], dims[1], dims[2], dims[3], w.size(0), bias, at::get_num_threads()});
    Plan &p = own != nullptr ? *own : forward;
    std::call_once(p.backward_once, [&] { make_backward(p, bias); });
    auto g = grads[0].contiguous();
    auto &s = cpu_stream();
    Buffers buf;
    const bool input_grad = ctx->needs_input_grad(0);
    at::Tensor gx, gw, gb;
    memory diff_dst;
    if (input_grad) {
      diff_dst = into(p.bd_diff_dst, g.data_ptr(), s, buf);
      gx = backward_data(p, diff_dst, w, s, buf);
    }
    if (ctx->needs_input_grad(1) || (bias && ctx->needs_input_grad(2))) {
      // Both backward passes read the upstream gradient in the same layout: reordered once.
      if (!input_grad || p.bw_diff_dst.to != p.bd_diff_dst.to) diff_dst = into(p.bw_diff_dst, g.data_ptr(), s, buf);
      // The plan for this thread's count may be another than the forward pass's (a backward pass
      // run with other threads): its primitives may read another blocked layout.
      at::Tensor input = src;
      if (blocked && forward.fwd_src.to != p.bw_src.to) {
        input = at::empty({(int64_t)((p.bw_src.to.get_size() + 3) / 4)}, src.options());
        memory from(forward.fwd_src.to, cpu_engine(), src.data_ptr()), to(p.bw_src.to, cpu_engine(), input.data_ptr());
        reorder(from, to).execute(s, from, to);
      }
      std::tie(gw, gb) = backward_weights(p, diff_dst, input, blocked, bias, s, buf);
      if (!ctx->needs_input_grad(1)) gw = at::Tensor();
    }
    s.wait();
    return {gx, gw, gb};
  }
};
}  // namespace
#endif

bool winograd_conv2d(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b,
                     const std::vector<int64_t> &stride, const std::vector<int64_t> &padding,
                     const std::vector<int64_t> &dilation, int64_t groups, at::Tensor &out) {
#ifdef CONTEXTDIFF_ONEDNN
  const bool has_bias = b.has_value() && b->defined();
  if (!g_winograd || groups != 1 || x.dim() != 4 || w.dim() != 4 || !x.device().is_cpu() || !w.device().is_cpu() ||
      x.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat || w.size(2) != 3 || w.size(3) != 3 ||
      stride != std::vector<int64_t>{1, 1} || padding != std::vector<int64_t>{1, 1} ||
      dilation != std::vector<int64_t>{1, 1} || x.size(1) != w.size(1) || x.size(1) % 16 != 0 ||
      w.size(0) % 16 != 0 || x.numel() == 0 || x.size(2) < 3 || x.size(3) < 3)
    return false;
  if (has_bias && (!b->device().is_cpu() || b->scalar_type() != at::kFloat || b->dim() != 1 || b->size(0) != w.size(0)))
    return false;
  auto xc = x.contiguous(), wc = w.contiguous();
  auto bc = has_bias ? b->contiguous() : at::Tensor();
  Plan *plan = plan_for(key_of(xc, wc, has_bias));
  if (plan == nullptr) return false;
  g_winograd_calls++;
  const bool grad = c10::GradMode::is_enabled() &&
                    (xc.requires_grad() || wc.requires_grad() || (has_bias && bc.requires_grad()));
  if (grad) {
    out = WinogradConv2d::apply(xc, wc, has_bias ? bc : at::empty({0}, xc.options()));
  } else {
    out = conv_forward(*plan, xc, wc, bc);
  }
  return true;
#else
  (void)x, (void)w, (void)b, (void)stride, (void)padding, (void)dilation, (void)groups, (void)out;
  return false;
#endif
}

}  // namespace ctorch

using namespace ctorch;

void ct_set_winograd_convolutions(bool on) { g_winograd = on; }
int64_t ct_winograd_convolution_calls(void) { return g_winograd_calls; }
bool ct_winograd_convolutions_compiled(void) {
#ifdef CONTEXTDIFF_ONEDNN
  return true;
#else
  return false;
#endif
}
