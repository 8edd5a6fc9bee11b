// Internal helpers shared by the C ABI translation units. Not part of the public header.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <exception>
#include <string>
#include <vector>

#include "ctorch.h"

struct ct_tensor_s {
  at::Tensor t;
};

namespace ctorch {

void set_error(const std::string &msg);

inline at::Tensor &T(ct_tensor h) {
  if (h == nullptr) throw std::invalid_argument("null tensor handle");
  return h->t;
}
inline c10::optional<at::Tensor> opt(ct_tensor h) {
  if (h == nullptr) return c10::nullopt;
  return h->t;
}
inline ct_tensor wrap(at::Tensor t) { return new ct_tensor_s{std::move(t)}; }

at::ScalarType to_scalar_type(int dtype);
int from_scalar_type(at::ScalarType st);

inline std::vector<int64_t> vec(const int64_t *p, int64_t n) {
  if (n < 0) throw std::invalid_argument("negative length");
  if (n > 0 && p == nullptr) throw std::invalid_argument("null shape pointer");
  return std::vector<int64_t>(p, p + n);
}

inline void record(const std::exception &e) {
  if (auto *ce = dynamic_cast<const c10::Error *>(&e)) {
    set_error(ce->what_without_backtrace());
  } else {
    set_error(e.what());
  }
}

// Runs `f` and returns its tensor wrapped in a new handle, or NULL after recording the error.
template <class F> ct_tensor guard_tensor(F &&f) {
  try {
    return wrap(f());
  } catch (const std::exception &e) {
    record(e);
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return nullptr;
}

// Runs `f` and returns 0, or 1 after recording the error.
template <class F> int guard_status(F &&f) {
  try {
    f();
    return 0;
  } catch (const std::exception &e) {
    record(e);
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return 1;
}

// A 3×3 float32 convolution by oneDNN's Winograd algorithm (winograd.cpp): true with `out` set,
// or false (nothing done) where it does not apply and libtorch's convolution should run.
bool winograd_conv2d(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b,
                     const std::vector<int64_t> &stride, const std::vector<int64_t> &padding,
                     const std::vector<int64_t> &dilation, int64_t groups, at::Tensor &out);

// A float32 CPU linear layer as a oneDNN 1×1 convolution over its rows (linear.cpp); other
// inputs take at::linear.
at::Tensor linear_as_conv(const at::Tensor &x, const at::Tensor &w, const c10::optional<at::Tensor> &b);
// out = alpha · a @ b (+ beta · out) for float32 CPU [B, n, k] and [B, k, m] operands with any
// strides, as one oneDNN matmul (matmul.cpp); out is [B, n, m] contiguous. False (nothing
// written) where oneDNN is not compiled in or has only its reference kernel for the product.
bool onednn_bmm(const at::Tensor &a, const at::Tensor &b, double alpha, double beta, at::Tensor &out);

}  // namespace ctorch
