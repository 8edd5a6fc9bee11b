#include <cstdlib>
#include <dlfcn.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <malloc.h>
// The tensor part of the C ABI: creation, elementwise, reductions, linear algebra, NN kernels,
// shape ops and autograd. Every function catches every C++ exception (see common.h).
#include "common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/csrc/api/include/torch/version.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/csrc/autograd/custom_function.h>
#include <atomic>
#include <c10/core/InferenceMode.h>

#include <cstring>
#include <mutex>

using namespace ctorch;

struct ct_generator_s {
  at::Generator gen;
};
struct ct_guard_s {
  c10::InferenceMode mode;
};

namespace ctorch {

static thread_local std::string g_error;

void set_error(const std::string &msg) { g_error = msg; }

at::ScalarType to_scalar_type(int dtype) {
  switch (dtype) {
    case CT_FLOAT32: return at::kFloat;
    case CT_FLOAT64: return at::kDouble;
    case CT_FLOAT16: return at::kHalf;
    case CT_BFLOAT16: return at::kBFloat16;
    case CT_INT64: return at::kLong;
    case CT_INT32: return at::kInt;
    case CT_UINT8: return at::kByte;
    case CT_BOOL: return at::kBool;
    case CT_INT8: return at::kChar;
    case CT_INT16: return at::kShort;
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(dtype));
}

int from_scalar_type(at::ScalarType st) {
  switch (st) {
    case at::kFloat: return CT_FLOAT32;
    case at::kDouble: return CT_FLOAT64;
    case at::kHalf: return CT_FLOAT16;
    case at::kBFloat16: return CT_BFLOAT16;
    case at::kLong: return CT_INT64;
    case at::kInt: return CT_INT32;
    case at::kByte: return CT_UINT8;
    case at::kBool: return CT_BOOL;
    case at::kChar: return CT_INT8;
    case at::kShort: return CT_INT16;
    default: return -1;
  }
}

// The calling thread's device for creation functions (ct_set_default_device).
static thread_local c10::Device g_default_device(c10::kCPU);

static at::TensorOptions opts(int dtype) {
  return at::TensorOptions().dtype(to_scalar_type(dtype)).device(g_default_device);
}

// An index tensor (index_select, gather, embedding, a class target) follows the tensor it
// indexes: indices are small, and a Swift array made into a tensor lands on the thread's
// default device, which need not be where the indexed data lives (a dataset kept on the CPU,
// a batch's rows picked on the GPU).
static at::Tensor on_device_of(const at::Tensor &index, const at::Tensor &data) {
  return index.device() == data.device() ? index : index.to(data.device());
}

// ---------------------------------------------------------------- mixed precision

// A mixed-precision scope (thread-local; scopes nest): matrix products and convolutions of
// float32 tensors read bfloat16 copies of their operands, compute in bfloat16 (oneDNN's native
// kernels on AVX-512 BF16 / AMX) and hand back float32. Everything between them — norms,
// activations, softmax, residual sums, losses, optimizer — stays float32. Unlike libtorch's
// autocast, which leaves the products' outputs in bfloat16, this keeps libtorch 1.13's slow
// bfloat16 GroupNorm and SiLU kernels out of the way (docs/PERFORMANCE.md "bf16").
static thread_local c10::optional<at::ScalarType> g_mixed;

// An operand in the scope's dtype (a float32 one; others as they are).
static at::Tensor lo(const at::Tensor &t) {
  return g_mixed.has_value() && t.scalar_type() == at::kFloat ? t.to(*g_mixed) : t;
}
static c10::optional<at::Tensor> lo(const c10::optional<at::Tensor> &t) {
  if (!t.has_value()) return t;
  return lo(*t);
}
// A product's result back in float32 when its first operand was.
static at::Tensor hi(const at::Tensor &result, const at::Tensor &operand) {
  return g_mixed.has_value() && operand.scalar_type() == at::kFloat && result.scalar_type() != at::kFloat
             ? result.to(at::kFloat)
             : result;
}

// CUDA comes from libtorch_cuda, loaded on first use from the folder libtorch_cpu was loaded
// from (then the library path), so a build linked against libtorch_cpu alone runs on machines
// without CUDA. Loading must precede the first look at ATen's CUDA hooks, which ATen caches.
static std::once_flag g_cuda_once;
static std::string g_cuda_error;

static void load_cuda() {
  std::call_once(g_cuda_once, [] {
    std::string tried;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&at::globalContext), &info) != 0 && info.dli_fname != nullptr) {
      std::string path(info.dli_fname);
      auto slash = path.rfind('/');
      if (slash != std::string::npos) {
        std::string candidate = path.substr(0, slash + 1) + "libtorch_cuda.so";
        if (dlopen(candidate.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) return;
        const char *e = dlerror();
        tried = std::string(e ? e : (candidate + ": not loadable").c_str()) + "; ";
      }
    }
    if (dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL) != nullptr) return;
    const char *e = dlerror();
    g_cuda_error = tried + (e ? e : "libtorch_cuda.so: not loadable");
  });
  if (!g_cuda_error.empty())
    throw std::runtime_error("CUDA is not available: this libtorch has no CUDA library (" + g_cuda_error +
                             "). Debian's libtorch is CPU-only; build against a CUDA torch with "
                             "CONTEXTDIFF_LIBTORCH (README) and run where its libraries and a GPU are");
  if (!at::globalContext().hasCUDA())
    throw std::runtime_error("CUDA is not available: libtorch_cuda loaded, but it finds no CUDA device "
                             "(driver missing, or no GPU visible)");
  // Full fp32 on the GPU, as on the CPU (PyTorch lets cuDNN use TF32 by default): results then
  // equal the CPU's within 1e-4. ct_set_allow_tf32 trades that for speed.
  static std::once_flag strict;
  std::call_once(strict, [] {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  });
}

static int64_t cuda_device_count() {
  load_cuda();
  return (int64_t)at::detail::getCUDAHooks().getNumGPUs();
}

static c10::Device device_of(int type, int64_t index) {
  switch (type) {
    case CT_DEVICE_CPU: return c10::Device(c10::kCPU);
    case CT_DEVICE_META: return c10::Device(c10::kMeta);
    case CT_DEVICE_CUDA: {
      if (index < 0 || index > 127) throw std::invalid_argument("CUDA device index out of range");
      int64_t count = cuda_device_count();
      if (index >= count)
        throw std::invalid_argument("cuda:" + std::to_string(index) + " asked for, but " + std::to_string(count) +
                                    " CUDA device(s) are visible");
      return c10::Device(c10::kCUDA, (c10::DeviceIndex)index);
    }
    default: throw std::invalid_argument("unknown device type " + std::to_string(type));
  }
}

static void device_out(const c10::Device &d, int *type, int64_t *index) {
  if (d.is_cpu()) *type = CT_DEVICE_CPU;
  else if (d.is_meta()) *type = CT_DEVICE_META;
  else if (d.is_cuda()) *type = CT_DEVICE_CUDA;
  else throw std::invalid_argument("unsupported device " + d.str());
  *index = d.has_index() ? d.index() : 0;
}

static c10::optional<at::Generator> gen_of(ct_generator g) {
  if (g == nullptr) return c10::nullopt;
  return g->gen;
}

// Random tensors for an accelerator are drawn on the CPU (with `g`, or the global CPU generator
// that `ct_manual_seed` seeds) and moved: a seed gives the same noise and the same initial
// weights on every device, as diffusers' `randn_tensor` does with a CPU generator.
template <class F> at::Tensor draw(const at::TensorOptions &o, F &&f) {
  if (o.device().is_cpu() || o.device().is_meta()) return f(o);
  return f(o.device(c10::kCPU)).to(o.device());
}

}  // namespace ctorch

extern "C" {

const char *ct_last_error(void) { return g_error.c_str(); }

// ---------------------------------------------------------------- devices

int ct_set_default_device(int type, int64_t index) {
  return guard_status([&] { g_default_device = device_of(type, index); });
}

int ct_get_default_device(int *type, int64_t *index) {
  return guard_status([&] { device_out(g_default_device, type, index); });
}

int ct_tensor_device(ct_tensor t, int *type, int64_t *index) {
  return guard_status([&] { device_out(T(t).device(), type, index); });
}

ct_tensor ct_to_device(ct_tensor t, int type, int64_t index) {
  return guard_tensor([&] { return T(t).to(device_of(type, index)); });
}

int64_t ct_cuda_device_count(void) {
  try {
    return cuda_device_count();
  } catch (const std::exception &e) {
    record(e);
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return -1;
}

int ct_set_allow_tf32(int allow) {
  return guard_status([&] {
    load_cuda();
    at::globalContext().setAllowTF32CuDNN(allow != 0);
    at::globalContext().setAllowTF32CuBLAS(allow != 0);
  });
}

int ct_cuda_synchronize(int64_t index) {
  return guard_status([&] {
    auto device = device_of(CT_DEVICE_CUDA, index);
    at::detail::getCUDAHooks().deviceSynchronize(device.index());
  });
}

// ---------------------------------------------------------------- lifetime and inspection

void ct_free(ct_tensor t) { delete t; }

ct_tensor ct_shallow_copy(ct_tensor t) {
  return guard_tensor([&] { return T(t); });
}

int64_t ct_dim(ct_tensor t) { return t ? t->t.dim() : -1; }

int ct_sizes(ct_tensor t, int64_t *out, int64_t capacity) {
  return guard_status([&] {
    auto s = T(t).sizes();
    if ((int64_t)s.size() > capacity) throw std::invalid_argument("sizes buffer too small");
    for (size_t i = 0; i < s.size(); ++i) out[i] = s[i];
  });
}

int ct_strides(ct_tensor t, int64_t *out, int64_t capacity) {
  return guard_status([&] {
    auto s = T(t).strides();
    if ((int64_t)s.size() > capacity) throw std::invalid_argument("strides buffer too small");
    for (size_t i = 0; i < s.size(); ++i) out[i] = s[i];
  });
}

int ct_scalar_type(ct_tensor t) { return t ? from_scalar_type(t->t.scalar_type()) : -1; }
int64_t ct_numel(ct_tensor t) { return t ? t->t.numel() : -1; }
bool ct_is_contiguous(ct_tensor t) { return t && t->t.is_contiguous(); }
bool ct_requires_grad(ct_tensor t) { return t && t->t.requires_grad(); }
bool ct_same_storage(ct_tensor a, ct_tensor b) {
  return a && b && a->t.defined() && b->t.defined() && a->t.is_same(b->t);
}

// ---------------------------------------------------------------- data in and out

ct_tensor ct_from_data(const void *data, const int64_t *shape, int64_t ndim, int dtype) {
  return guard_tensor([&] {
    auto sizes = vec(shape, ndim);
    auto out = at::empty(sizes, opts(dtype).device(c10::kCPU));
    size_t nbytes = out.numel() * out.element_size();
    if (nbytes > 0) {
      if (data == nullptr) throw std::invalid_argument("null data pointer");
      std::memcpy(out.data_ptr(), data, nbytes);
    }
    return g_default_device.is_cpu() ? out : out.to(g_default_device);
  });
}

int ct_copy_out(ct_tensor t, void *out, size_t nbytes) {
  return guard_status([&] {
    auto c = T(t).detach();
    if (!c.device().is_cpu()) c = c.to(c10::kCPU);
    c = c.contiguous();
    size_t have = c.numel() * c.element_size();
    if (have != nbytes)
      throw std::invalid_argument("copy_out: buffer of " + std::to_string(nbytes) +
                                  " bytes for a tensor of " + std::to_string(have) + " bytes");
    if (have > 0) std::memcpy(out, c.data_ptr(), have);
  });
}

int ct_item_double(ct_tensor t, double *out) {
  return guard_status([&] { *out = T(t).item<double>(); });
}

int ct_item_int64(ct_tensor t, int64_t *out) {
  return guard_status([&] { *out = T(t).item<int64_t>(); });
}

// ---------------------------------------------------------------- creation

ct_tensor ct_zeros(const int64_t *shape, int64_t ndim, int dtype) {
  return guard_tensor([&] { return at::zeros(vec(shape, ndim), opts(dtype)); });
}
ct_tensor ct_ones(const int64_t *shape, int64_t ndim, int dtype) {
  return guard_tensor([&] { return at::ones(vec(shape, ndim), opts(dtype)); });
}
ct_tensor ct_full(const int64_t *shape, int64_t ndim, double value, int dtype) {
  return guard_tensor([&] { return at::full(vec(shape, ndim), value, opts(dtype)); });
}
ct_tensor ct_arange(double start, double end, double step, int dtype) {
  return guard_tensor([&] { return at::arange(start, end, step, opts(dtype)); });
}
ct_tensor ct_linspace(double start, double end, int64_t steps, int dtype) {
  return guard_tensor([&] { return at::linspace(start, end, steps, opts(dtype)); });
}
ct_tensor ct_eye(int64_t n, int dtype) {
  return guard_tensor([&] { return at::eye(n, opts(dtype)); });
}
ct_tensor ct_randn(const int64_t *shape, int64_t ndim, int dtype, ct_generator g) {
  return guard_tensor([&] {
    return draw(opts(dtype), [&](const at::TensorOptions &o) { return at::randn(vec(shape, ndim), gen_of(g), o); });
  });
}
ct_tensor ct_rand(const int64_t *shape, int64_t ndim, int dtype, ct_generator g) {
  return guard_tensor([&] {
    return draw(opts(dtype), [&](const at::TensorOptions &o) { return at::rand(vec(shape, ndim), gen_of(g), o); });
  });
}
ct_tensor ct_randint(int64_t low, int64_t high, const int64_t *shape, int64_t ndim, ct_generator g) {
  return guard_tensor([&] {
    return draw(opts(CT_INT64), [&](const at::TensorOptions &o) {
      return at::randint(low, high, vec(shape, ndim), gen_of(g), o);
    });
  });
}
ct_tensor ct_randperm(int64_t n, ct_generator g) {
  return guard_tensor([&] {
    return draw(opts(CT_INT64), [&](const at::TensorOptions &o) { return at::randperm(n, gen_of(g), o); });
  });
}
ct_tensor ct_zeros_like(ct_tensor t) {
  return guard_tensor([&] { return at::zeros_like(T(t)); });
}
ct_tensor ct_ones_like(ct_tensor t) {
  return guard_tensor([&] { return at::ones_like(T(t)); });
}
ct_tensor ct_randn_like(ct_tensor t, ct_generator g) {
  return guard_tensor([&] {
    return draw(T(t).options(), [&](const at::TensorOptions &o) { return at::randn(T(t).sizes(), gen_of(g), o); });
  });
}

int ct_set_data(ct_tensor dst, ct_tensor src) {
  return guard_status([&] { T(dst).set_data(T(src)); });
}

// ---------------------------------------------------------------- generators

void ct_manual_seed(uint64_t seed) {
  try {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  } catch (...) {
  }
}

ct_generator ct_generator_new(uint64_t seed) {
  try {
    return new ct_generator_s{at::make_generator<at::CPUGeneratorImpl>(seed)};
  } catch (const std::exception &e) {
    record(e);
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return nullptr;
}
void ct_generator_free(ct_generator g) { delete g; }

ct_tensor ct_generator_get_state(ct_generator g) {
  return guard_tensor([&] {
    if (!g) throw std::invalid_argument("null generator");
    return g->gen.get_state();
  });
}
int ct_generator_set_state(ct_generator g, ct_tensor state) {
  return guard_status([&] {
    if (!g) throw std::invalid_argument("null generator");
    g->gen.set_state(T(state));
  });
}

// ---------------------------------------------------------------- elementwise

ct_tensor ct_unary(int op, ct_tensor h) {
  return guard_tensor([&]() -> at::Tensor {
    const at::Tensor &t = T(h);
    switch (op) {
      case CT_NEG: return at::neg(t);
      case CT_EXP: return at::exp(t);
      case CT_LOG: return at::log(t);
      case CT_SQRT: return at::sqrt(t);
      case CT_RSQRT: return at::rsqrt(t);
      case CT_ABS: return at::abs(t);
      case CT_SIN: return at::sin(t);
      case CT_COS: return at::cos(t);
      case CT_TANH: return at::tanh(t);
      case CT_SIGMOID: return at::sigmoid(t);
      case CT_RELU: return at::relu(t);
      case CT_SILU: return at::silu(t);
      case CT_GELU: return at::gelu(t);
      case CT_GELU_TANH: return at::gelu(t, "tanh");
      case CT_SQUARE: return at::square(t);
      case CT_SIGN: return at::sign(t);
      case CT_FLOOR: return at::floor(t);
      case CT_ROUND: return at::round(t);
      case CT_RECIPROCAL: return at::reciprocal(t);
      case CT_LOG1P: return at::log1p(t);
      case CT_EXPM1: return at::expm1(t);
      case CT_ERF: return at::erf(t);
      case CT_ISNAN: return at::isnan(t);
      case CT_ISFINITE: return at::isfinite(t);
      case CT_LOGICAL_NOT: return at::logical_not(t);
      case CT_CEIL: return at::ceil(t);
    }
    throw std::invalid_argument("unknown unary op " + std::to_string(op));
  });
}

static at::Tensor binary(int op, const at::Tensor &a, const at::Tensor &b) {
  switch (op) {
    case CT_ADD: return at::add(a, b);
    case CT_SUB: return at::sub(a, b);
    case CT_MUL: return at::mul(a, b);
    case CT_DIV: return at::div(a, b);
    case CT_POW: return at::pow(a, b);
    case CT_MAXIMUM: return at::maximum(a, b);
    case CT_MINIMUM: return at::minimum(a, b);
    case CT_EQ: return at::eq(a, b);
    case CT_NE: return at::ne(a, b);
    case CT_LT: return at::lt(a, b);
    case CT_LE: return at::le(a, b);
    case CT_GT: return at::gt(a, b);
    case CT_GE: return at::ge(a, b);
    case CT_LOGICAL_AND: return at::logical_and(a, b);
    case CT_LOGICAL_OR: return at::logical_or(a, b);
    case CT_REMAINDER: return at::remainder(a, b);
    case CT_ATAN2: return at::atan2(a, b);
  }
  throw std::invalid_argument("unknown binary op " + std::to_string(op));
}

ct_tensor ct_binary(int op, ct_tensor a, ct_tensor b) {
  return guard_tensor([&] { return binary(op, T(a), T(b)); });
}

ct_tensor ct_binary_scalar(int op, ct_tensor a, double s, bool reversed) {
  return guard_tensor([&]() -> at::Tensor {
    const at::Tensor &t = T(a);
    // A wrapped number takes part in type promotion like a Python scalar: float32 stays float32.
    at::Tensor sc = c10::scalar_to_tensor(at::Scalar(s));
    sc.unsafeGetTensorImpl()->set_wrapped_number(true);
    return reversed ? binary(op, sc, t) : binary(op, t, sc);
  });
}

ct_tensor ct_where(ct_tensor c, ct_tensor a, ct_tensor b) {
  return guard_tensor([&] { return at::where(T(c), T(a), T(b)); });
}

ct_tensor ct_clamp(ct_tensor t, double lo, double hi, bool has_lo, bool has_hi) {
  return guard_tensor([&] {
    c10::optional<at::Scalar> l, h;
    if (has_lo) l = lo;
    if (has_hi) h = hi;
    return at::clamp(T(t), l, h);
  });
}

ct_tensor ct_masked_fill(ct_tensor t, ct_tensor mask, double value) {
  return guard_tensor([&] { return at::masked_fill(T(t), T(mask), value); });
}

ct_tensor ct_to_dtype(ct_tensor t, int dtype) {
  return guard_tensor([&] { return T(t).to(to_scalar_type(dtype)); });
}

ct_tensor ct_lerp(ct_tensor a, ct_tensor b, double w) {
  return guard_tensor([&] { return at::lerp(T(a), T(b), w); });
}

// ---------------------------------------------------------------- in place

int ct_inplace_binary(int op, ct_tensor a, ct_tensor b) {
  return guard_status([&] {
    at::Tensor &x = T(a);
    const at::Tensor &y = T(b);
    switch (op) {
      case CT_ADD: x.add_(y); return;
      case CT_SUB: x.sub_(y); return;
      case CT_MUL: x.mul_(y); return;
      case CT_DIV: x.div_(y); return;
      case CT_MAXIMUM: x.copy_(at::maximum(x, y)); return;
      case CT_MINIMUM: x.copy_(at::minimum(x, y)); return;
    }
    throw std::invalid_argument("unsupported in-place op " + std::to_string(op));
  });
}

int ct_inplace_scalar(int op, ct_tensor a, double s) {
  return guard_status([&] {
    at::Tensor &x = T(a);
    switch (op) {
      case CT_ADD: x.add_(s); return;
      case CT_SUB: x.sub_(s); return;
      case CT_MUL: x.mul_(s); return;
      case CT_DIV: x.div_(s); return;
      case CT_POW: x.pow_(s); return;
    }
    throw std::invalid_argument("unsupported in-place scalar op " + std::to_string(op));
  });
}

int ct_add_scaled_(ct_tensor a, ct_tensor b, double alpha) {
  return guard_status([&] { T(a).add_(T(b), alpha); });
}
int ct_addcmul_(ct_tensor a, ct_tensor b, ct_tensor c, double value) {
  return guard_status([&] { T(a).addcmul_(T(b), T(c), value); });
}
int ct_addcdiv_(ct_tensor a, ct_tensor b, ct_tensor c, double value) {
  return guard_status([&] { T(a).addcdiv_(T(b), T(c), value); });
}
int ct_lerp_(ct_tensor a, ct_tensor b, double w) {
  return guard_status([&] { T(a).lerp_(T(b), w); });
}
int ct_copy_(ct_tensor dst, ct_tensor src) {
  return guard_status([&] { T(dst).copy_(T(src)); });
}
int ct_fill_(ct_tensor a, double v) {
  return guard_status([&] { T(a).fill_(v); });
}
int ct_zero_(ct_tensor a) {
  return guard_status([&] { T(a).zero_(); });
}

static std::vector<at::Tensor> list(ct_tensor *ts, int64_t n) {
  if (n < 0) throw std::invalid_argument("negative tensor count");
  if (n > 0 && ts == nullptr) throw std::invalid_argument("null tensor list");
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int64_t i = 0; i < n; ++i) v.push_back(T(ts[i]));
  return v;
}

// a ← a + w (b − a) for every pair. Float32 CPU lists (the EMA's ~200 tensors every step) in one
// pass, chunks spread over libtorch's threads, with libtorch's lerp formula (its two branches);
// elsewhere two multi-tensor calls (1.13 has no _foreach_lerp_), which on the CPU are loops of
// per-tensor kernels, most too small to use a second thread.
int ct_foreach_lerp_(ct_tensor *a, ct_tensor *b, int64_t n, double w) {
  return guard_status([&] {
    auto va = list(a, n);
    auto vb = list(b, n);
    bool fused = true;
    for (int64_t i = 0; i < n && fused; ++i)
      for (const at::Tensor *t : {&va[i], &vb[i]})
        fused = fused && t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous() &&
                t->numel() == va[i].numel() && !t->requires_grad();
    if (!fused) {
      at::_foreach_mul_(va, 1.0 - w);
      at::_foreach_add_(va, vb, w);
      return;
    }
    struct Chunk {
      float *a;
      const float *b;
      int64_t n;
    };
    constexpr int64_t kChunk = 16384;
    std::vector<Chunk> chunks;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t count = va[i].numel();
      float *pa = va[i].data_ptr<float>();
      const float *pb = vb[i].data_ptr<float>();
      for (int64_t off = 0; off < count; off += kChunk) chunks.push_back({pa + off, pb + off, std::min(kChunk, count - off)});
    }
    const float fw = (float)w;
    at::parallel_for(0, (int64_t)chunks.size(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const Chunk ch = chunks[c];
        if (fw < 0.5f) {
          for (int64_t k = 0; k < ch.n; ++k) ch.a[k] = ch.a[k] + fw * (ch.b[k] - ch.a[k]);
        } else {
          for (int64_t k = 0; k < ch.n; ++k) ch.a[k] = ch.b[k] - (ch.b[k] - ch.a[k]) * (1.0f - fw);
        }
      }
    });
  });
}
// One AdamW update of every parameter with a gradient, as multi-tensor (foreach) calls: a
// handful of launches for the whole model instead of eight per parameter (what made a CUDA
// training step launch-bound). The arithmetic is torch.optim.AdamW's, op for op:
//   p *= 1 - lr·wd;  m.lerp_(g, 1 - β1);  v = β2·v + (1 - β2)·g²;  p -= step_size · m / (√v / c2 + eps)
// On the CPU each foreach call runs the same per-tensor kernels, so results equal a loop's.
// AdamW on float32 CPU tensors in one pass over the memory: libtorch 1.13's multi-tensor ops are
// loops of per-tensor ops on the CPU (nine passes over every parameter's state, ~3000 small
// operator calls per step of the shipped model, most too small to be split over threads). Here
// every element is updated once, in chunks spread over libtorch's threads, with the arithmetic of
// the multi-tensor path below in the same order (float32 scalars, lerp's two branches).
static bool fused_adamw_applies(const std::vector<at::Tensor> &p, const std::vector<at::Tensor> &g,
                                const std::vector<at::Tensor> &m, const std::vector<at::Tensor> &v) {
  for (size_t i = 0; i < p.size(); ++i) {
    for (const at::Tensor *t : {&p[i], &g[i], &m[i], &v[i]}) {
      if (!t->defined() || !t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() ||
          t->numel() != p[i].numel())
        return false;
    }
  }
  return true;
}

// The update's float32 scalars: keep = 1 − lr·wd, w1 = 1 − β1, b2 = β2, w2 = 1 − β2, root = the
// bias correction's square root, eps, step = −step size.
struct AdamWScalars {
  float keep, w1, b2, w2, root, eps, step;
};

// Elements [from, n) one at a time: the multi-tensor path's arithmetic, op for op (the compiler
// contracts nothing here: the shim is built without FMA).
static void adamw_scalar(float *__restrict p, float *__restrict m, float *__restrict v, const float *__restrict g,
                         int64_t from, int64_t n, const AdamWScalars &k, bool decay) {
  for (int64_t i = from; i < n; ++i) {
    const float gi = g[i];
    float mi = m[i];
    mi = k.w1 < 0.5f ? mi + k.w1 * (gi - mi) : gi - (gi - mi) * (1.0f - k.w1);
    const float vi = v[i] * k.b2 + k.w2 * gi * gi;
    const float denom = std::sqrt(vi) / k.root + k.eps;
    const float pi = decay ? p[i] * k.keep : p[i];
    m[i] = mi, v[i] = vi, p[i] = pi + k.step * (mi / denom);
  }
}

#if defined(__x86_64__)
// The same arithmetic 16 lanes at a time (AVX-512 behind a run-time check: the shim is compiled
// for baseline x86-64, where `std::sqrt` stays a scalar library call). Every operation is
// IEEE-rounded on its own, in the scalar loop's order, so the results are bit-identical to it.
// Returns how many leading elements it updated (a multiple of 16).
__attribute__((target("avx512f"))) static int64_t adamw_avx512(float *__restrict p, float *__restrict m,
                                                                float *__restrict v, const float *__restrict g,
                                                                int64_t n, const AdamWScalars &k, bool decay) {
  const __m512 w1 = _mm512_set1_ps(k.w1), oneMinusW1 = _mm512_set1_ps(1.0f - k.w1), b2 = _mm512_set1_ps(k.b2),
               w2 = _mm512_set1_ps(k.w2), root = _mm512_set1_ps(k.root), eps = _mm512_set1_ps(k.eps),
               keep = _mm512_set1_ps(k.keep), step = _mm512_set1_ps(k.step);
  const bool small = k.w1 < 0.5f;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 gi = _mm512_loadu_ps(g + i);
    __m512 mi = _mm512_loadu_ps(m + i);
    mi = small ? _mm512_add_ps(mi, _mm512_mul_ps(w1, _mm512_sub_ps(gi, mi)))
               : _mm512_sub_ps(gi, _mm512_mul_ps(_mm512_sub_ps(gi, mi), oneMinusW1));
    const __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(v + i), b2), _mm512_mul_ps(_mm512_mul_ps(w2, gi), gi));
    const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), root), eps);
    __m512 pi = _mm512_loadu_ps(p + i);
    if (decay) pi = _mm512_mul_ps(pi, keep);
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    _mm512_storeu_ps(p + i, _mm512_add_ps(pi, _mm512_mul_ps(step, _mm512_div_ps(mi, denom))));
  }
  return i;
}
#endif

static void fused_adamw(const std::vector<at::Tensor> &p, const std::vector<at::Tensor> &g,
                        const std::vector<at::Tensor> &m, const std::vector<at::Tensor> &v, double lr, double beta1,
                        double beta2, double eps, double weight_decay, double step_size, double correction2_root) {
  struct Chunk {
    float *p, *m, *v;
    const float *g;
    int64_t n;
  };
  constexpr int64_t kChunk = 16384;
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < p.size(); ++i) {
    const int64_t count = p[i].numel();
    float *pp = p[i].data_ptr<float>(), *pm = m[i].data_ptr<float>(), *pv = v[i].data_ptr<float>();
    const float *pg = g[i].data_ptr<float>();
    for (int64_t off = 0; off < count; off += kChunk)
      chunks.push_back({pp + off, pm + off, pv + off, pg + off, std::min(kChunk, count - off)});
  }
  const bool decay = weight_decay != 0;
  const AdamWScalars k{(float)(1.0 - lr * weight_decay), (float)(1.0 - beta1), (float)beta2, (float)(1.0 - beta2),
                       (float)correction2_root, (float)eps, (float)-step_size};
#if defined(__x86_64__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
#else
  constexpr bool avx512 = false;
#endif
  at::parallel_for(0, (int64_t)chunks.size(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const Chunk ch = chunks[c];
      int64_t done = 0;
#if defined(__x86_64__)
      if (avx512) done = adamw_avx512(ch.p, ch.m, ch.v, ch.g, ch.n, k, decay);
#endif
      adamw_scalar(ch.p, ch.m, ch.v, ch.g, done, ch.n, k, decay);
    }
  });
}

int ct_adamw_step_(ct_tensor *params, ct_tensor *grads, ct_tensor *exp_avg, ct_tensor *exp_avg_sq, int64_t n,
                   double lr, double beta1, double beta2, double eps, double weight_decay, double step_size,
                   double correction2_root) {
  return guard_status([&] {
    auto p = list(params, n), g = list(grads, n), m = list(exp_avg, n), v = list(exp_avg_sq, n);
    if (n == 0) return;
    at::NoGradGuard no_grad;
    if (fused_adamw_applies(p, g, m, v)) {
      fused_adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step_size, correction2_root);
      return;
    }
    if (weight_decay != 0) at::_foreach_mul_(p, 1.0 - lr * weight_decay);
#if TORCH_VERSION_MAJOR >= 2
    at::_foreach_lerp_(m, g, 1.0 - beta1);
#else
    for (int64_t i = 0; i < n; ++i) m[i].lerp_(g[i], 1.0 - beta1);  // 1.13 has no _foreach_lerp_
#endif
    at::_foreach_mul_(v, beta2);
    at::_foreach_addcmul_(v, g, g, 1.0 - beta2);
    auto denom = at::_foreach_sqrt(v);
    at::_foreach_div_(denom, correction2_root);
    at::_foreach_add_(denom, eps);
    at::_foreach_addcdiv_(p, m, denom, -step_size);
  });
}
// The 2-norm of each tensor, one multi-tensor call (gradient clipping).
ct_tensor ct_foreach_norm_stacked(ct_tensor *a, int64_t n) {
  return guard_tensor([&] {
    auto va = list(a, n);
    if (n == 0) throw std::invalid_argument("foreach norm of no tensors");
    return at::stack(at::_foreach_norm(va, 2));
  });
}
int ct_foreach_mul_scalar_(ct_tensor *a, int64_t n, double s) {
  return guard_status([&] {
    auto va = list(a, n);
    at::_foreach_mul_(va, s);
  });
}

// ---------------------------------------------------------------- reductions

ct_tensor ct_reduce(int op, ct_tensor h, const int64_t *dims, int64_t ndims, bool keepdim) {
  return guard_tensor([&]() -> at::Tensor {
    const at::Tensor &t = T(h);
    auto d = vec(dims, ndims);
    at::IntArrayRef dr(d);
    switch (op) {
      case CT_SUM: return at::sum(t, dr, keepdim);
      case CT_MEAN: return at::mean(t, dr, keepdim);
      case CT_AMAX: return at::amax(t, dr, keepdim);
      case CT_AMIN: return at::amin(t, dr, keepdim);
      case CT_PROD: {
        if (d.size() != 1) throw std::invalid_argument("prod reduces exactly one dimension");
        return at::prod(t, d[0], keepdim);
      }
      case CT_VAR: return at::var(t, at::OptionalIntArrayRef(dr), /*unbiased=*/false, keepdim);
      case CT_STD: return at::std(t, at::OptionalIntArrayRef(dr), /*unbiased=*/false, keepdim);
      case CT_VAR_UNBIASED: return at::var(t, at::OptionalIntArrayRef(dr), true, keepdim);
      case CT_STD_UNBIASED: return at::std(t, at::OptionalIntArrayRef(dr), true, keepdim);
      case CT_LOGSUMEXP: return at::logsumexp(t, dr, keepdim);
      case CT_NORM2: return at::linalg_vector_norm(t, 2, at::OptionalIntArrayRef(dr), keepdim);
      case CT_ANY: {
        at::Tensor r = t.to(at::kBool);
        for (auto it = d.rbegin(); it != d.rend(); ++it) r = at::any(r, *it, keepdim);
        return r;
      }
      case CT_ALL: {
        at::Tensor r = t.to(at::kBool);
        for (auto it = d.rbegin(); it != d.rend(); ++it) r = at::all(r, *it, keepdim);
        return r;
      }
    }
    throw std::invalid_argument("unknown reduction " + std::to_string(op));
  });
}

ct_tensor ct_reduce_all(int op, ct_tensor h) {
  return guard_tensor([&]() -> at::Tensor {
    const at::Tensor &t = T(h);
    switch (op) {
      case CT_SUM: return at::sum(t);
      case CT_MEAN: return at::mean(t);
      case CT_AMAX: return at::max(t);
      case CT_AMIN: return at::min(t);
      case CT_PROD: return at::prod(t);
      case CT_VAR: return at::var(t, false);
      case CT_STD: return at::std(t, false);
      case CT_VAR_UNBIASED: return at::var(t, true);
      case CT_STD_UNBIASED: return at::std(t, true);
      case CT_LOGSUMEXP: return at::logsumexp(t.reshape({-1}), {0}, false);
      case CT_NORM2: return at::linalg_vector_norm(t, 2);
      case CT_ANY: return at::any(t);
      case CT_ALL: return at::all(t);
    }
    throw std::invalid_argument("unknown reduction " + std::to_string(op));
  });
}

ct_tensor ct_argmax(ct_tensor t, int64_t dim, bool keepdim) {
  return guard_tensor([&] { return at::argmax(T(t), dim, keepdim); });
}
ct_tensor ct_cumsum(ct_tensor t, int64_t dim) {
  return guard_tensor([&] { return at::cumsum(T(t), dim); });
}
ct_tensor ct_cumprod(ct_tensor t, int64_t dim) {
  return guard_tensor([&] { return at::cumprod(T(t), dim); });
}
ct_tensor ct_quantile(ct_tensor t, double q, int64_t dim, bool has_dim, bool keepdim) {
  return guard_tensor([&] {
    c10::optional<int64_t> d;
    if (has_dim) d = dim;
    return at::quantile(T(t), q, d, keepdim);
  });
}

// ---------------------------------------------------------------- linear algebra

// ---------------------------------------------------------------- batched products

// libtorch 1.13's CPU bmm/baddbmm multiplies small float32 matrices (attention's, 64×16 and
// the like) one batch entry at a time through the dispatcher (select, addmm_, resolve_conj per
// entry) on one thread: in a training step of the shipped model that bookkeeping took more
// time than the arithmetic (docs/NOTES.md). Here each entry is one direct cblas_sgemm call on
// the tensors' own memory (transposes as flags, no copies), the entries spread over libtorch's
// threads. Forward and backward (as a custom autograd function); float32 on the CPU with a
// BLAS that exports cblas_sgemm (OpenBLAS, as Debian's libtorch uses), else libtorch's path.
using cblas_sgemm_fn = void (*)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                                float *, int);
static cblas_sgemm_fn blas_sgemm() {
  static cblas_sgemm_fn f = (cblas_sgemm_fn)dlsym(RTLD_DEFAULT, "cblas_sgemm");
  return f;
}
static std::atomic<bool> g_direct_bmm{true};
void ct_set_direct_batched_products(bool on) { g_direct_bmm = on; }
// The whole batch as one oneDNN matmul where it has a kernel for it (matmul.cpp), else one
// cblas_sgemm per entry.
static std::atomic<bool> g_onednn_bmm{true};
void ct_set_onednn_batched_products(bool on) { g_onednn_bmm = on; }

// The [B, R, C] operand as BLAS sees each entry: row-major (stride(2) == 1) or transposed.
static bool gemm_view(const at::Tensor &t, bool &transposed, int64_t &ld) {
  if (t.stride(2) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(2))) {
    transposed = false, ld = t.stride(1);
    return true;
  }
  if (t.stride(1) == 1 && t.stride(2) >= std::max<int64_t>(1, t.size(1))) {
    transposed = true, ld = t.stride(2);
    return true;
  }
  return false;
}

static bool direct_bmm_applies(const at::Tensor &a, const at::Tensor &b) {
  return g_direct_bmm && blas_sgemm() != nullptr && !g_mixed.has_value() && a.device().is_cpu() &&
         b.device().is_cpu() && a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat && a.dim() == 3 &&
         b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1) && a.numel() > 0 && b.numel() > 0 &&
         a.size(0) <= INT32_MAX && a.size(1) <= INT32_MAX && a.size(2) <= INT32_MAX && b.size(2) <= INT32_MAX;
}

// alpha · a @ b (+ beta · bias, broadcast to [B, n, m]), entry by entry.
static at::Tensor bmm_direct(at::Tensor a, at::Tensor b, const at::Tensor *bias, double beta, double alpha) {
  bool ta = false, tb = false;
  int64_t lda = 0, ldb = 0;
  if (!gemm_view(a, ta, lda)) a = a.contiguous(), gemm_view(a, ta, lda);
  if (!gemm_view(b, tb, ldb)) b = b.contiguous(), gemm_view(b, tb, ldb);
  const int64_t batch = a.size(0), n = a.size(1), k = a.size(2), m = b.size(2);
  const bool with_bias = bias != nullptr && beta != 0;
  auto out = at::empty({batch, n, m}, a.options());
  if (with_bias) out.copy_(bias->expand({batch, n, m}));
  if (g_onednn_bmm && onednn_bmm(a, b, alpha, with_bias ? beta : 0, out)) return out;
  const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>();
  float *pc = out.data_ptr<float>();
  const int64_t sa = a.stride(0), sb = b.stride(0);
  const float fb = with_bias ? (float)beta : 0.f, fa = (float)alpha;
  auto sgemm = blas_sgemm();
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n * m * k / 64));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      sgemm(101, ta ? 112 : 111, tb ? 112 : 111, (int)n, (int)m, (int)k, fa, pa + i * sa, (int)lda, pb + i * sb, (int)ldb,
            fb, pc + i * n * m, (int)m);
  });
  return out;
}

// The gradients of alpha · a @ b with respect to a and b, where the graph needs them.
static void product_grads(torch::autograd::AutogradContext *ctx, const at::Tensor &g, const at::Tensor &a,
                          const at::Tensor &b, double alpha, size_t first, at::Tensor &ga, at::Tensor &gb) {
  if (ctx->needs_input_grad(first)) ga = bmm_direct(g, b.transpose(1, 2), nullptr, 0, alpha);
  if (ctx->needs_input_grad(first + 1)) gb = bmm_direct(a.transpose(1, 2), g, nullptr, 0, alpha);
}

struct DirectBaddbmm : public torch::autograd::Function<DirectBaddbmm> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &bias, const at::Tensor &a,
                            const at::Tensor &b, double beta, double alpha) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["bias_sizes"] = bias.sizes().vec();
    return bmm_direct(a, b, &bias, beta, alpha);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &b = saved[1];
    const double beta = ctx->saved_data["beta"].toDouble(), alpha = ctx->saved_data["alpha"].toDouble();
    auto g = grads[0].contiguous();
    at::Tensor gbias, ga, gb;
    if (ctx->needs_input_grad(0)) gbias = g.sum_to_size(ctx->saved_data["bias_sizes"].toIntVector()) * beta;
    product_grads(ctx, g, a, b, alpha, 1, ga, gb);
    return {gbias, ga, gb, at::Tensor(), at::Tensor()};
  }
};

struct DirectBmm : public torch::autograd::Function<DirectBmm> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &a, const at::Tensor &b) {
    ctx->save_for_backward({a, b});
    return bmm_direct(a, b, nullptr, 0, 1);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto g = grads[0].contiguous();
    at::Tensor ga, gb;
    product_grads(ctx, g, saved[0], saved[1], 1, 0, ga, gb);
    return {ga, gb};
  }
};

// bias undefined: a plain bmm.
static at::Tensor baddbmm_direct(const at::Tensor &bias, const at::Tensor &a, const at::Tensor &b, double beta,
                                 double alpha) {
  const bool grad = c10::GradMode::is_enabled() &&
                    (a.requires_grad() || b.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (!grad) return bmm_direct(a, b, bias.defined() ? &bias : nullptr, beta, alpha);
  if (!bias.defined()) return DirectBmm::apply(a, b);
  return DirectBaddbmm::apply(bias, a, b, beta, alpha);
}

ct_tensor ct_matmul(ct_tensor a, ct_tensor b) {
  return guard_tensor([&] { return hi(at::matmul(lo(T(a)), lo(T(b))), T(a)); });
}
ct_tensor ct_bmm(ct_tensor a, ct_tensor b) {
  return guard_tensor([&] {
    if (direct_bmm_applies(T(a), T(b))) return baddbmm_direct(at::Tensor(), T(a), T(b), 0, 1);
    return hi(at::bmm(lo(T(a)), lo(T(b))), T(a));
  });
}
ct_tensor ct_baddbmm(ct_tensor input, ct_tensor a, ct_tensor b, double beta, double alpha) {
  return guard_tensor([&] {
    const auto &bias = T(input);
    if (direct_bmm_applies(T(a), T(b)) && bias.device().is_cpu() && bias.scalar_type() == at::kFloat &&
        bias.dim() <= 3 && at::is_expandable_to(bias.sizes(), {T(a).size(0), T(a).size(1), T(b).size(2)}))
      return baddbmm_direct(bias, T(a), T(b), beta, alpha);
    return hi(at::baddbmm(lo(T(input)), lo(T(a)), lo(T(b)), beta, alpha), T(a));
  });
}
ct_tensor ct_linear(ct_tensor x, ct_tensor w, ct_tensor b) {
  return guard_tensor([&] { return hi(at::linear(lo(T(x)), lo(T(w)), lo(opt(b))), T(x)); });
}

ct_tensor ct_linear_conv(ct_tensor x, ct_tensor w, ct_tensor b) {
  return guard_tensor([&] {
    // In a mixed scope oneDNN's bfloat16 matrix product is as fast as the 1×1-convolution view.
    if (g_mixed.has_value()) return hi(at::linear(lo(T(x)), lo(T(w)), lo(opt(b))), T(x));
    return linear_as_conv(T(x), T(w), opt(b));
  });
}
int ct_eigh(ct_tensor t, ct_tensor *eigenvalues, ct_tensor *eigenvectors) {
  return guard_status([&] {
    auto r = at::linalg_eigh(T(t));
    *eigenvalues = wrap(std::get<0>(r));
    *eigenvectors = wrap(std::get<1>(r));
  });
}

// ---------------------------------------------------------------- neural-network kernels

static std::vector<int64_t> arr(const int64_t *p, int n) { return vec(p, n); }

ct_tensor ct_conv2d(ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                    const int64_t *padding, const int64_t *dilation, int64_t groups) {
  return guard_tensor([&] {
    at::Tensor out;
    if (!g_mixed.has_value() &&
        winograd_conv2d(T(x), T(w), opt(b), arr(stride, 2), arr(padding, 2), arr(dilation, 2), groups, out))
      return out;
    return hi(at::conv2d(lo(T(x)), lo(T(w)), lo(opt(b)), arr(stride, 2), arr(padding, 2), arr(dilation, 2), groups), T(x));
  });
}
ct_tensor ct_conv_transpose2d(ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                              const int64_t *padding, const int64_t *output_padding,
                              int64_t groups, const int64_t *dilation) {
  return guard_tensor([&] {
    return at::conv_transpose2d(T(x), T(w), opt(b), arr(stride, 2), arr(padding, 2),
                                arr(output_padding, 2), groups, arr(dilation, 2));
  });
}
ct_tensor ct_conv3d(ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                    const int64_t *padding, const int64_t *dilation, int64_t groups) {
  return guard_tensor([&] {
    return at::conv3d(T(x), T(w), opt(b), arr(stride, 3), arr(padding, 3), arr(dilation, 3), groups);
  });
}
ct_tensor ct_group_norm(ct_tensor x, int64_t groups, ct_tensor w, ct_tensor b, double eps) {
  return guard_tensor([&] { return at::group_norm(T(x), groups, opt(w), opt(b), eps); });
}
ct_tensor ct_layer_norm(ct_tensor x, const int64_t *normalized_shape, int64_t n, ct_tensor w,
                        ct_tensor b, double eps) {
  return guard_tensor([&] { return at::layer_norm(T(x), vec(normalized_shape, n), opt(w), opt(b), eps); });
}
ct_tensor ct_softmax(ct_tensor t, int64_t dim) {
  return guard_tensor([&] { return at::softmax(T(t), dim); });
}
ct_tensor ct_log_softmax(ct_tensor t, int64_t dim) {
  return guard_tensor([&] { return at::log_softmax(T(t), dim); });
}
ct_tensor ct_embedding(ct_tensor weight, ct_tensor indices) {
  return guard_tensor([&] { return at::embedding(T(weight), on_device_of(T(indices), T(weight))); });
}
ct_tensor ct_upsample_nearest2d(ct_tensor x, int64_t out_h, int64_t out_w) {
  return guard_tensor([&] {
    return at::upsample_nearest2d(T(x), std::vector<int64_t>{out_h, out_w});
  });
}
ct_tensor ct_upsample_bilinear2d(ct_tensor x, int64_t out_h, int64_t out_w, bool align_corners) {
  return guard_tensor([&] {
    return at::upsample_bilinear2d(T(x), std::vector<int64_t>{out_h, out_w}, align_corners);
  });
}
ct_tensor ct_upsample_bicubic2d(ct_tensor x, int64_t out_h, int64_t out_w, bool align_corners) {
  return guard_tensor([&] {
    return at::upsample_bicubic2d(T(x), std::vector<int64_t>{out_h, out_w}, align_corners);
  });
}
ct_tensor ct_avg_pool2d(ct_tensor x, int64_t kernel, int64_t stride) {
  return guard_tensor([&] {
    return at::avg_pool2d(T(x), std::vector<int64_t>{kernel, kernel}, std::vector<int64_t>{stride, stride});
  });
}
ct_tensor ct_adaptive_avg_pool2d(ct_tensor x, int64_t out_h, int64_t out_w) {
  return guard_tensor([&] { return at::adaptive_avg_pool2d(T(x), std::vector<int64_t>{out_h, out_w}); });
}
ct_tensor ct_cross_entropy(ct_tensor logits, ct_tensor target, double label_smoothing) {
  return guard_tensor([&] {
    return at::cross_entropy_loss(T(logits), on_device_of(T(target), T(logits)), c10::nullopt, at::Reduction::Mean, -100,
                                  label_smoothing);
  });
}
ct_tensor ct_mse_loss(ct_tensor a, ct_tensor b) {
  return guard_tensor([&] { return at::mse_loss(T(a), T(b)); });
}

// ---------------------------------------------------------------- shape and indexing

ct_tensor ct_reshape(ct_tensor t, const int64_t *shape, int64_t ndim) {
  return guard_tensor([&] { return at::reshape(T(t), vec(shape, ndim)); });
}
ct_tensor ct_permute(ct_tensor t, const int64_t *dims, int64_t ndim) {
  return guard_tensor([&] { return T(t).permute(vec(dims, ndim)); });
}
ct_tensor ct_transpose(ct_tensor t, int64_t d0, int64_t d1) {
  return guard_tensor([&] { return at::transpose(T(t), d0, d1); });
}
ct_tensor ct_contiguous(ct_tensor t) {
  return guard_tensor([&] { return T(t).contiguous(); });
}
ct_tensor ct_channels_last(ct_tensor t) {
  return guard_tensor([&] { return T(t).contiguous(at::MemoryFormat::ChannelsLast); });
}
ct_tensor ct_squeeze(ct_tensor t, int64_t dim) {
  return guard_tensor([&] { return at::squeeze(T(t), dim); });
}
ct_tensor ct_unsqueeze(ct_tensor t, int64_t dim) {
  return guard_tensor([&] { return at::unsqueeze(T(t), dim); });
}
ct_tensor ct_expand(ct_tensor t, const int64_t *shape, int64_t ndim) {
  return guard_tensor([&] { return T(t).expand(vec(shape, ndim)); });
}
ct_tensor ct_repeat(ct_tensor t, const int64_t *repeats, int64_t ndim) {
  return guard_tensor([&] { return T(t).repeat(vec(repeats, ndim)); });
}
ct_tensor ct_slice(ct_tensor t, int64_t dim, int64_t start, int64_t end, int64_t step) {
  return guard_tensor([&] { return at::slice(T(t), dim, start, end, step); });
}
ct_tensor ct_select(ct_tensor t, int64_t dim, int64_t index) {
  return guard_tensor([&] { return at::select(T(t), dim, index); });
}
ct_tensor ct_index_select(ct_tensor t, int64_t dim, ct_tensor index) {
  return guard_tensor([&] { return at::index_select(T(t), dim, on_device_of(T(index), T(t))); });
}
ct_tensor ct_gather(ct_tensor t, int64_t dim, ct_tensor index) {
  return guard_tensor([&] { return at::gather(T(t), dim, on_device_of(T(index), T(t))); });
}
ct_tensor ct_flip(ct_tensor t, const int64_t *dims, int64_t ndim) {
  return guard_tensor([&] { return at::flip(T(t), vec(dims, ndim)); });
}
ct_tensor ct_tril(ct_tensor t, int64_t diagonal) {
  return guard_tensor([&] { return at::tril(T(t), diagonal); });
}
ct_tensor ct_triu(ct_tensor t, int64_t diagonal) {
  return guard_tensor([&] { return at::triu(T(t), diagonal); });
}
ct_tensor ct_cat(ct_tensor *ts, int64_t n, int64_t dim) {
  return guard_tensor([&] { return at::cat(list(ts, n), dim); });
}
ct_tensor ct_stack(ct_tensor *ts, int64_t n, int64_t dim) {
  return guard_tensor([&] { return at::stack(list(ts, n), dim); });
}
int ct_chunk(ct_tensor t, int64_t chunks, int64_t dim, ct_tensor *out, int64_t capacity, int64_t *count) {
  return guard_status([&] {
    auto parts = at::chunk(T(t), chunks, dim);
    if ((int64_t)parts.size() > capacity) throw std::invalid_argument("chunk: output buffer too small");
    for (size_t i = 0; i < parts.size(); ++i) out[i] = wrap(parts[i]);
    *count = (int64_t)parts.size();
  });
}
int ct_split(ct_tensor t, const int64_t *sizes, int64_t n, int64_t dim, ct_tensor *out) {
  return guard_status([&] {
    auto parts = at::split_with_sizes(T(t), vec(sizes, n), dim);
    for (size_t i = 0; i < parts.size(); ++i) out[i] = wrap(parts[i]);
  });
}

// ---------------------------------------------------------------- autograd

int ct_set_requires_grad(ct_tensor t, bool flag) {
  return guard_status([&] { T(t).set_requires_grad(flag); });
}
int ct_backward(ct_tensor t, ct_tensor grad, bool retain_graph) {
  return guard_status([&] {
    at::Tensor g = grad ? T(grad) : at::Tensor();
    T(t).backward(g, retain_graph);
  });
}
int ct_grad(ct_tensor t, ct_tensor *out) {
  return guard_status([&] {
    const at::Tensor &g = T(t).grad();
    *out = g.defined() ? wrap(g) : nullptr;
  });
}
int ct_zero_grad(ct_tensor t) {
  return guard_status([&] { T(t).mutable_grad().reset(); });
}
ct_tensor ct_detach(ct_tensor t) {
  return guard_tensor([&] { return T(t).detach(); });
}
bool ct_grad_enabled(void) { return c10::GradMode::is_enabled(); }
void ct_set_grad_enabled(bool flag) { c10::GradMode::set_enabled(flag); }

ct_guard ct_inference_mode_enter(void) {
  try {
    return new ct_guard_s{};
  } catch (...) {
    set_error("could not enter inference mode");
    return nullptr;
  }
}
void ct_inference_mode_exit(ct_guard g) { delete g; }

// ---------------------------------------------------------------- profiling

// libtorch's (legacy) autograd profiler: every operator called between start and stop, with its
// time, written as a Chrome trace (chrome://tracing, Perfetto) when the profile stops.
struct ct_profile_s {
  std::unique_ptr<torch::autograd::profiler::RecordProfile> record;
};
ct_profile ct_profile_start(const char *path) {
  try {
    if (path == nullptr) throw std::invalid_argument("null profile path");
    return new ct_profile_s{std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(path))};
  } catch (const std::exception &e) {
    set_error(std::string("could not start the profiler: ") + e.what());
    return nullptr;
  } catch (...) {
    set_error("could not start the profiler");
    return nullptr;
  }
}
int ct_profile_stop(ct_profile p) {
  return guard_status([&] {
    if (p == nullptr) throw std::invalid_argument("null profile");
    std::unique_ptr<ct_profile_s> owned(p);
    owned->record.reset();  // writes the trace
  });
}

struct ct_mixed_precision_s {
  c10::optional<at::ScalarType> previous;
};

ct_mixed_precision ct_mixed_precision_enter(int device_type, int dtype) {
  try {
    auto type = device_of(device_type, 0).type();
    if (type != c10::kCPU && type != c10::kCUDA) throw std::invalid_argument("mixed precision runs on the CPU or CUDA");
    auto st = to_scalar_type(dtype);
    if (st != at::kBFloat16 && st != at::kHalf) throw std::invalid_argument("mixed precision computes in bfloat16 or float16");
    auto *g = new ct_mixed_precision_s{g_mixed};
    g_mixed = st;
    return g;
  } catch (const std::exception &e) {
    set_error(e.what());
    return nullptr;
  }
}
void ct_mixed_precision_exit(ct_mixed_precision g) {
  if (g == nullptr) return;
  g_mixed = g->previous;
  delete g;
}

// ---------------------------------------------------------------- threads

// OpenBLAS (which libtorch calls for mm/bmm on this platform) keeps its own thread pool that
// at::set_num_threads does not touch: without this, a "1-thread" process used ~190 % CPU. Looked
// up at run time, so another BLAS (or none) simply leaves it out.
typedef void (*blas_set_threads_fn)(int);
typedef int (*blas_get_threads_fn)(void);

void ct_set_num_threads(int64_t n) {
  try {
    if (n > 0) {
      at::set_num_threads((int)n);
      // An explicit OPENBLAS_NUM_THREADS in the environment wins.
      if (getenv("OPENBLAS_NUM_THREADS") == nullptr)
        if (auto f = (blas_set_threads_fn)dlsym(RTLD_DEFAULT, "openblas_set_num_threads")) f((int)n);
    }
  } catch (...) {
  }
}
// The calling thread's own intra-op thread count. libtorch's OpenMP backend asks
// omp_get_max_threads(), an OpenMP setting of each thread; at::set_num_threads would also change
// the process-wide default and clear oneDNN's cache, so this calls OpenMP directly (looked up at
// run time: a build without OpenMP has one thread per caller anyway). Returns the previous count,
// or -1 where there is no OpenMP.
typedef void (*omp_set_threads_fn)(int);
typedef int (*omp_get_threads_fn)(void);
int64_t ct_set_thread_intraop_threads(int64_t n) {
  try {
    static auto set = (omp_set_threads_fn)dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    static auto get = (omp_get_threads_fn)dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    if (set == nullptr || get == nullptr || n < 1) return -1;
    // First libtorch's own once-per-thread set-up (lazy_init_num_threads), which would
    // otherwise overwrite the count at this thread's first parallel operator.
    (void)at::get_num_threads();
    int previous = get();
    set((int)n);
    return previous;
  } catch (...) {
    return -1;
  }
}

// A thread's libtorch state that a helper thread must share to compute as this one would: grad
// mode, inference mode, the default device and the mixed-precision scope.
struct ct_thread_context_s {
  bool grad_enabled;
  bool inference_mode;
  c10::Device device;
  c10::optional<at::ScalarType> mixed;
};
struct ct_thread_scope_s {
  c10::AutoGradMode grad;
  c10::optional<c10::InferenceMode> inference;
  c10::Device previous_device;
  c10::optional<at::ScalarType> previous_mixed;
  int64_t previous_threads;
  explicit ct_thread_scope_s(const ct_thread_context_s &c)
      : grad(c.grad_enabled), previous_device(g_default_device), previous_mixed(g_mixed), previous_threads(-1) {
    if (c.inference_mode) inference.emplace(true);
  }
};
ct_thread_context ct_thread_context_capture(void) {
  try {
    return new ct_thread_context_s{c10::GradMode::is_enabled(), c10::InferenceMode::is_enabled(), g_default_device,
                                   g_mixed};
  } catch (...) {
    set_error("could not capture the thread's libtorch state");
    return nullptr;
  }
}
void ct_thread_context_free(ct_thread_context c) { delete c; }
ct_thread_scope ct_thread_context_enter(ct_thread_context c, int64_t threads) {
  if (c == nullptr) return nullptr;
  try {
    auto *scope = new ct_thread_scope_s(*c);
    g_default_device = c->device;
    g_mixed = c->mixed;
    scope->previous_threads = ct_set_thread_intraop_threads(threads);
    return scope;
  } catch (const std::exception &e) {
    set_error(e.what());
    return nullptr;
  }
}
void ct_thread_context_exit(ct_thread_scope s) {
  if (s == nullptr) return;
  if (s->previous_threads > 0) ct_set_thread_intraop_threads(s->previous_threads);
  g_default_device = s->previous_device;
  g_mixed = s->previous_mixed;
  delete s;  // inference mode, then grad mode, as they were
}
int ct_set_blas_threads(int64_t n) {
  auto f = (blas_set_threads_fn)dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
  if (f == nullptr || n < 1) return -1;
  f((int)n);
  return 0;
}
int64_t ct_get_blas_threads(void) {
  auto f = (blas_get_threads_fn)dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
  return f ? (int64_t)f() : -1;
}
int64_t ct_get_num_threads(void) { return at::get_num_threads(); }

int ct_exit_with_parent(int64_t parent) {
#if defined(__linux__)
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) return -1;
  // A blocked SIGTERM would stay pending forever: the signal mask is inherited through fork and
  // exec, and a launcher started from a thread that blocks signals (a test runner's worker, a
  // dispatch queue) passes that mask on to its ranks. Unblock it on this (the main) thread, so
  // the process-directed signal has a thread to take it.
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  if (pthread_sigmask(SIG_UNBLOCK, &term, nullptr) != 0) return -1;
  // The parent may have died before the request was made: then no signal will ever come.
  return getppid() == (pid_t)parent ? 1 : 0;
#else
  return -1;
#endif
}

int ct_keep_freed_memory(void) {
#if defined(__GLIBC__)
  int a = mallopt(M_MMAP_THRESHOLD, 32 << 20);
  int b = mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return a == 1 && b == 1;
#else
  return 0;
#endif
}

const char *ct_libtorch_version(void) { return TORCH_VERSION; }

const char *ct_parallel_info(void) {
  static thread_local std::string info;
  try {
    info = at::get_parallel_info();
  } catch (...) {
    info = "unavailable";
  }
  return info.c_str();
}

}  // extern "C"
