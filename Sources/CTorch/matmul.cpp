// Batched float32 products (attention's QKᵀ and weights·V, forward and backward) as one oneDNN
// matmul primitive over the whole batch, on the operands' own memory.
//
// ops.cpp's direct products call cblas_sgemm once per batch entry. Attention's matrices are
// tiny (64×16 by 16×64, 256×32 by 32×16; heads of 8 or 16 channels), where OpenBLAS's per-call
// packing costs as much as the arithmetic; oneDNN's batched brgemm kernel takes the batch in one
// call: 1.4–2.5× faster on the shipped model's shapes at one thread (docs/NOTES.md
// "Performance" 14). Primitives are made once per shape, strides, scales and thread count and
// kept; a shape oneDNN would compute with its reference kernel is left to the BLAS path.
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <tuple>

#include "common.h"

#include <ATen/Parallel.h>

#ifdef CONTEXTDIFF_ONEDNN
#include "onednn.h"
#endif

namespace ctorch {

static std::atomic<int64_t> g_onednn_bmm_calls{0};

#ifdef CONTEXTDIFF_ONEDNN
namespace {
using namespace dnnl;
using dt = memory::data_type;

// `threads`: the caller's intra-op threads (a primitive splits its work for the count it was
// made with; a shard running on one thread needs its own, as in winograd.cpp).
struct Key {
  int64_t batch, n, k, m, a0, a1, a2, b0, b1, b2;
  float alpha, beta;
  int threads;
  bool operator<(const Key &o) const {
    return std::tie(batch, n, k, m, a0, a1, a2, b0, b1, b2, alpha, beta, threads) <
           std::tie(o.batch, o.n, o.k, o.m, o.a0, o.a1, o.a2, o.b0, o.b1, o.b2, o.alpha, o.beta, o.threads);
  }
};

struct Plan {
  memory::desc a, b, c, scratch;
  std::unique_ptr<matmul> prim;
};

// A new plan for `k`, or nullptr where oneDNN has only its reference kernel for the product.
std::unique_ptr<Plan> make_plan(const Key &k) {
  try {
    auto plan = std::make_unique<Plan>();
    plan->a = memory::desc({k.batch, k.n, k.k}, dt::f32, memory::dims{k.a0, k.a1, k.a2});
    plan->b = memory::desc({k.batch, k.k, k.m}, dt::f32, memory::dims{k.b0, k.b1, k.b2});
    plan->c = memory::desc({k.batch, k.n, k.m}, dt::f32, memory::format_tag::abc);
    primitive_attr attr;
    attr.set_scratchpad_mode(scratchpad_mode::user);
    if (k.alpha != 1.f) attr.set_output_scales(0, {k.alpha});
    if (k.beta != 0.f) {
      post_ops ops;
      ops.append_sum(k.beta);
      attr.set_post_ops(ops);
    }
    auto pd = matmul::primitive_desc(matmul::desc(plan->a, plan->b, plan->c), attr, cpu_engine());
    if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0) return nullptr;
    plan->scratch = pd.scratchpad_desc();
    plan->prim = std::make_unique<matmul>(pd);
    return plan;
  } catch (const dnnl::error &) {
    return nullptr;  // no implementation for these strides: the BLAS path for this key
  }
}

// nullptr where oneDNN has only its reference kernel for this product (remembered), or the
// cache is full (the BLAS path then).
Plan *plan_for(const Key &k) {
  static PlanCache<Key, Plan> plans(512);
  return plans.get(k, [&] { return make_plan(k); });
}
}  // namespace
#endif

bool onednn_bmm(const at::Tensor &a, const at::Tensor &b, double alpha, double beta, at::Tensor &out) {
#ifdef CONTEXTDIFF_ONEDNN
  const int64_t batch = a.size(0);
  // A broadcast batch (stride 0) is not a matmul operand oneDNN accepts as such.
  if (batch > 1 && (a.stride(0) == 0 || b.stride(0) == 0)) return false;
  Key key{batch,       a.size(1),   a.size(2),   b.size(2),       a.stride(0),     a.stride(1),
          a.stride(2), b.stride(0), b.stride(1), b.stride(2),     (float)alpha,    (float)beta,
          at::get_num_threads()};
  if (batch == 1) {  // one entry: its batch stride is never used; give it a valid one
    key.a0 = std::max(key.a1 * key.n, key.a2 * key.k);
    key.b0 = std::max(key.b1 * key.k, key.b2 * key.m);
  }
  Plan *p = plan_for(key);
  if (p == nullptr) return false;
  auto &e = cpu_engine();
  const size_t scratchBytes = p->scratch.get_size();
  auto scratch = scratchBytes > 0 ? at::empty({(int64_t)((scratchBytes + 3) / 4)}, at::kFloat) : at::Tensor();
  memory am(p->a, e, a.data_ptr()), bm(p->b, e, b.data_ptr()), cm(p->c, e, out.data_ptr()),
      sm(p->scratch, e, scratchBytes > 0 ? scratch.data_ptr() : nullptr);
  auto &s = cpu_stream();
  p->prim->execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, sm}});
  s.wait();
  g_onednn_bmm_calls++;
  return true;
#else
  (void)a, (void)b, (void)alpha, (void)beta, (void)out;
  return false;
#endif
}

}  // namespace ctorch

int64_t ct_onednn_batched_product_calls(void) { return ctorch::g_onednn_bmm_calls; }
