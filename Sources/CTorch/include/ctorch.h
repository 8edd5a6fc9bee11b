// ctorch.h — a thin C ABI over libtorch (ATen + autograd + c10d/Gloo).
//
// Conventions
// - A `ct_tensor` owns one reference to an at::Tensor; release it with ct_free.
// - Functions that produce a tensor return NULL on failure; functions that return `int`
//   return 0 on success and non-zero on failure. After a failure, ct_last_error() gives
//   libtorch's message (without its C++ backtrace) for the calling thread.
// - No libtorch type crosses this boundary, so the same Swift code can run over a CUDA build.
#ifndef CTORCH_H
#define CTORCH_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ct_tensor_s *ct_tensor;
typedef struct ct_generator_s *ct_generator;
typedef struct ct_guard_s *ct_guard;
typedef struct ct_mixed_precision_s *ct_mixed_precision;
typedef struct ct_thread_context_s *ct_thread_context;
typedef struct ct_thread_scope_s *ct_thread_scope;
typedef struct ct_profile_s *ct_profile;
typedef struct ct_store_s *ct_store;
typedef struct ct_pg_s *ct_pg;

typedef enum {
  CT_FLOAT32 = 0, CT_FLOAT64 = 1, CT_FLOAT16 = 2, CT_BFLOAT16 = 3,
  CT_INT64 = 4, CT_INT32 = 5, CT_UINT8 = 6, CT_BOOL = 7, CT_INT8 = 8, CT_INT16 = 9
} ct_dtype;

typedef enum {
  CT_NEG = 0, CT_EXP, CT_LOG, CT_SQRT, CT_RSQRT, CT_ABS, CT_SIN, CT_COS, CT_TANH,
  CT_SIGMOID, CT_RELU, CT_SILU, CT_GELU, CT_GELU_TANH, CT_SQUARE, CT_SIGN, CT_FLOOR,
  CT_ROUND, CT_RECIPROCAL, CT_LOG1P, CT_EXPM1, CT_ERF, CT_ISNAN, CT_ISFINITE, CT_LOGICAL_NOT,
  CT_CEIL
} ct_unary_op;

typedef enum {
  CT_ADD = 0, CT_SUB, CT_MUL, CT_DIV, CT_POW, CT_MAXIMUM, CT_MINIMUM,
  CT_EQ, CT_NE, CT_LT, CT_LE, CT_GT, CT_GE, CT_LOGICAL_AND, CT_LOGICAL_OR, CT_REMAINDER,
  CT_ATAN2
} ct_binary_op;

typedef enum {
  CT_SUM = 0, CT_MEAN, CT_AMAX, CT_AMIN, CT_PROD, CT_VAR, CT_STD, CT_LOGSUMEXP, CT_NORM2,
  CT_VAR_UNBIASED, CT_STD_UNBIASED, CT_ANY, CT_ALL
} ct_reduce_op;

typedef enum { CT_DEVICE_CPU = 0, CT_DEVICE_META = 1, CT_DEVICE_CUDA = 2 } ct_device_type;

/* devices
 * The creation functions (zeros, randn, from_data, ...) make their tensors on the calling
 * thread's default device (CPU unless set). The meta device holds shapes and dtypes but no
 * data: a model built there allocates nothing. */
int ct_set_default_device(int type, int64_t index);
int ct_get_default_device(int *type, int64_t *index);
int ct_tensor_device(ct_tensor t, int *type, int64_t *index);
ct_tensor ct_to_device(ct_tensor t, int type, int64_t index);
/* CUDA: libtorch_cuda is loaded on first use (from libtorch_cpu's folder, then the library
 * path), so a CPU-only libtorch runs everything else. Random tensors for CUDA are drawn on the
 * CPU and moved: a seed gives the same numbers on every device. */
int64_t ct_cuda_device_count(void); /* -1 with ct_last_error saying why CUDA is unavailable */
int ct_cuda_synchronize(int64_t index); /* waits for the device's queued kernels */
int ct_set_allow_tf32(int allow); /* TF32 in cuDNN and cuBLAS (off: full fp32, the default here) */

/* errors */
const char *ct_last_error(void);

/* lifetime and inspection */
void ct_free(ct_tensor t);
ct_tensor ct_shallow_copy(ct_tensor t);
int64_t ct_dim(ct_tensor t);
int ct_sizes(ct_tensor t, int64_t *out, int64_t capacity);
int ct_strides(ct_tensor t, int64_t *out, int64_t capacity);
int ct_scalar_type(ct_tensor t);
int64_t ct_numel(ct_tensor t);
bool ct_is_contiguous(ct_tensor t);
bool ct_requires_grad(ct_tensor t);
bool ct_same_storage(ct_tensor a, ct_tensor b);

/* data in and out */
ct_tensor ct_from_data(const void *data, const int64_t *shape, int64_t ndim, int dtype);
int ct_copy_out(ct_tensor t, void *out, size_t nbytes);
int ct_item_double(ct_tensor t, double *out);
int ct_item_int64(ct_tensor t, int64_t *out);

/* creation */
ct_tensor ct_zeros(const int64_t *shape, int64_t ndim, int dtype);
ct_tensor ct_ones(const int64_t *shape, int64_t ndim, int dtype);
ct_tensor ct_full(const int64_t *shape, int64_t ndim, double value, int dtype);
ct_tensor ct_arange(double start, double end, double step, int dtype);
ct_tensor ct_linspace(double start, double end, int64_t steps, int dtype);
ct_tensor ct_eye(int64_t n, int dtype);
ct_tensor ct_randn(const int64_t *shape, int64_t ndim, int dtype, ct_generator g);
ct_tensor ct_rand(const int64_t *shape, int64_t ndim, int dtype, ct_generator g);
ct_tensor ct_randint(int64_t low, int64_t high, const int64_t *shape, int64_t ndim, ct_generator g);
ct_tensor ct_randperm(int64_t n, ct_generator g);
ct_tensor ct_zeros_like(ct_tensor t);
ct_tensor ct_ones_like(ct_tensor t);
ct_tensor ct_randn_like(ct_tensor t, ct_generator g);

/* replaces the data (storage, shape, dtype) behind `dst` with `src`'s, keeping `dst`'s autograd
   identity (PyTorch's `param.data = src`) */
int ct_set_data(ct_tensor dst, ct_tensor src);

/* generators (ATen's CPU mt19937) */
void ct_manual_seed(uint64_t seed);
ct_generator ct_generator_new(uint64_t seed);
void ct_generator_free(ct_generator g);
ct_tensor ct_generator_get_state(ct_generator g);
int ct_generator_set_state(ct_generator g, ct_tensor state);

/* elementwise */
ct_tensor ct_unary(int op, ct_tensor t);
ct_tensor ct_binary(int op, ct_tensor a, ct_tensor b);
ct_tensor ct_binary_scalar(int op, ct_tensor a, double s, bool reversed);
ct_tensor ct_where(ct_tensor cond, ct_tensor a, ct_tensor b);
ct_tensor ct_clamp(ct_tensor t, double lo, double hi, bool has_lo, bool has_hi);
ct_tensor ct_masked_fill(ct_tensor t, ct_tensor mask, double value);
ct_tensor ct_to_dtype(ct_tensor t, int dtype);
ct_tensor ct_lerp(ct_tensor a, ct_tensor b, double w);

/* in place (on tensors that need no grad, e.g. optimizer state, or under no-grad) */
int ct_inplace_binary(int op, ct_tensor a, ct_tensor b);
int ct_inplace_scalar(int op, ct_tensor a, double s);
int ct_add_scaled_(ct_tensor a, ct_tensor b, double alpha);
int ct_addcmul_(ct_tensor a, ct_tensor b, ct_tensor c, double value);
int ct_addcdiv_(ct_tensor a, ct_tensor b, ct_tensor c, double value);
int ct_lerp_(ct_tensor a, ct_tensor b, double w);
int ct_copy_(ct_tensor dst, ct_tensor src);
int ct_fill_(ct_tensor a, double v);
int ct_zero_(ct_tensor a);
int ct_foreach_lerp_(ct_tensor *a, ct_tensor *b, int64_t n, double w);
int ct_foreach_mul_scalar_(ct_tensor *a, int64_t n, double s);
/* One AdamW update (torch.optim.AdamW's arithmetic) of n parameters, as multi-tensor calls. */
int ct_adamw_step_(ct_tensor *params, ct_tensor *grads, ct_tensor *exp_avg, ct_tensor *exp_avg_sq, int64_t n,
                   double lr, double beta1, double beta2, double eps, double weight_decay, double step_size,
                   double correction2_root);
/* [n]: the 2-norm of each of n tensors (one multi-tensor call). */
ct_tensor ct_foreach_norm_stacked(ct_tensor *a, int64_t n);

/* reductions */
ct_tensor ct_reduce(int op, ct_tensor t, const int64_t *dims, int64_t ndims, bool keepdim);
ct_tensor ct_reduce_all(int op, ct_tensor t);
ct_tensor ct_argmax(ct_tensor t, int64_t dim, bool keepdim);
ct_tensor ct_cumsum(ct_tensor t, int64_t dim);
ct_tensor ct_cumprod(ct_tensor t, int64_t dim);
ct_tensor ct_quantile(ct_tensor t, double q, int64_t dim, bool has_dim, bool keepdim);

/* linear algebra */
ct_tensor ct_matmul(ct_tensor a, ct_tensor b);
ct_tensor ct_bmm(ct_tensor a, ct_tensor b);
ct_tensor ct_baddbmm(ct_tensor input, ct_tensor a, ct_tensor b, double beta, double alpha);
ct_tensor ct_linear(ct_tensor x, ct_tensor w, ct_tensor b /* nullable */);
/* The same y = x Wᵀ + b, computed (float32 CPU, >= 256 rows) as a oneDNN 1×1 convolution over a
   channels-last view of x ([rows, C] viewed as [B, C, N, 1]); other inputs fall back to ct_linear.
   Differentiable; no copy when x is contiguous. */
ct_tensor ct_linear_conv(ct_tensor x, ct_tensor w, ct_tensor b /* nullable */);
int ct_eigh(ct_tensor t, ct_tensor *eigenvalues, ct_tensor *eigenvectors);

/* neural-network kernels */
ct_tensor ct_conv2d(ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                    const int64_t *padding, const int64_t *dilation, int64_t groups);
ct_tensor ct_conv_transpose2d(ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                              const int64_t *padding, const int64_t *output_padding,
                              int64_t groups, const int64_t *dilation);
ct_tensor ct_conv3d(ct_tensor x, ct_tensor w, ct_tensor b, const int64_t *stride,
                    const int64_t *padding, const int64_t *dilation, int64_t groups);
ct_tensor ct_group_norm(ct_tensor x, int64_t groups, ct_tensor w, ct_tensor b, double eps);
ct_tensor ct_layer_norm(ct_tensor x, const int64_t *normalized_shape, int64_t n, ct_tensor w,
                        ct_tensor b, double eps);
ct_tensor ct_softmax(ct_tensor t, int64_t dim);
ct_tensor ct_log_softmax(ct_tensor t, int64_t dim);
ct_tensor ct_embedding(ct_tensor weight, ct_tensor indices);
ct_tensor ct_upsample_nearest2d(ct_tensor x, int64_t out_h, int64_t out_w);
ct_tensor ct_upsample_bilinear2d(ct_tensor x, int64_t out_h, int64_t out_w, bool align_corners);
ct_tensor ct_upsample_bicubic2d(ct_tensor x, int64_t out_h, int64_t out_w, bool align_corners);
ct_tensor ct_avg_pool2d(ct_tensor x, int64_t kernel, int64_t stride);
ct_tensor ct_adaptive_avg_pool2d(ct_tensor x, int64_t out_h, int64_t out_w);
ct_tensor ct_cross_entropy(ct_tensor logits, ct_tensor target, double label_smoothing);
ct_tensor ct_mse_loss(ct_tensor a, ct_tensor b);

/* shape and indexing */
ct_tensor ct_reshape(ct_tensor t, const int64_t *shape, int64_t ndim);
ct_tensor ct_permute(ct_tensor t, const int64_t *dims, int64_t ndim);
ct_tensor ct_transpose(ct_tensor t, int64_t d0, int64_t d1);
ct_tensor ct_contiguous(ct_tensor t);
ct_tensor ct_channels_last(ct_tensor t);
ct_tensor ct_squeeze(ct_tensor t, int64_t dim);
ct_tensor ct_unsqueeze(ct_tensor t, int64_t dim);
ct_tensor ct_expand(ct_tensor t, const int64_t *shape, int64_t ndim);
ct_tensor ct_repeat(ct_tensor t, const int64_t *repeats, int64_t ndim);
ct_tensor ct_slice(ct_tensor t, int64_t dim, int64_t start, int64_t end, int64_t step);
ct_tensor ct_select(ct_tensor t, int64_t dim, int64_t index);
ct_tensor ct_index_select(ct_tensor t, int64_t dim, ct_tensor index);
ct_tensor ct_gather(ct_tensor t, int64_t dim, ct_tensor index);
ct_tensor ct_flip(ct_tensor t, const int64_t *dims, int64_t ndim);
ct_tensor ct_tril(ct_tensor t, int64_t diagonal);
ct_tensor ct_triu(ct_tensor t, int64_t diagonal);
ct_tensor ct_cat(ct_tensor *ts, int64_t n, int64_t dim);
ct_tensor ct_stack(ct_tensor *ts, int64_t n, int64_t dim);
/* `out` must hold `capacity` handles; the number written is returned through `count`. */
int ct_chunk(ct_tensor t, int64_t chunks, int64_t dim, ct_tensor *out, int64_t capacity, int64_t *count);
int ct_split(ct_tensor t, const int64_t *sizes, int64_t n, int64_t dim, ct_tensor *out);

/* autograd */
int ct_set_requires_grad(ct_tensor t, bool flag);
int ct_backward(ct_tensor t, ct_tensor grad /* nullable */, bool retain_graph);
/* writes NULL to *out when the tensor has no gradient */
int ct_grad(ct_tensor t, ct_tensor *out);
int ct_zero_grad(ct_tensor t);
ct_tensor ct_detach(ct_tensor t);
bool ct_grad_enabled(void);
void ct_set_grad_enabled(bool flag);
ct_guard ct_inference_mode_enter(void);
void ct_inference_mode_exit(ct_guard g);
/* Mixed precision: matrix products and convolutions on device_type (CT_DEVICE_*) in dtype
 * (bfloat16 or float16) until the matching exit; NULL and the last error when refused. */
ct_mixed_precision ct_mixed_precision_enter(int device_type, int dtype);
void ct_mixed_precision_exit(ct_mixed_precision g);
/* libtorch's operator profiler until ct_profile_stop, which writes a Chrome trace to path. */
ct_profile ct_profile_start(const char *path);
/* Batched float32 products on the CPU as direct BLAS calls per entry (default on). */
void ct_set_direct_batched_products(bool on);
/* Within those, the whole batch as one oneDNN matmul where oneDNN has a kernel for it (default
 * on), and the number of products computed that way so far. */
void ct_set_onednn_batched_products(bool on);
int64_t ct_onednn_batched_product_calls(void);
/* 3×3 float32 convolutions (stride 1, padding 1, channels multiples of 16) by oneDNN's Winograd
 * algorithm where this build has oneDNN's headers and the CPU a Winograd kernel (default on);
 * the number of convolutions run that way so far; whether this build has the path at all. */
void ct_set_winograd_convolutions(bool on);
int64_t ct_winograd_convolution_calls(void);
bool ct_winograd_convolutions_compiled(void);
int ct_profile_stop(ct_profile p);

/* threads */
void ct_set_num_threads(int64_t n);
/// OpenBLAS's own thread count, or -1 when the BLAS in use is not OpenBLAS.
int64_t ct_get_blas_threads(void);
/// Sets OpenBLAS's own thread count; -1 when the BLAS in use is not OpenBLAS (or n < 1).
int ct_set_blas_threads(int64_t n);
/// Asks the kernel to send this process SIGTERM when its parent exits (Linux). Returns 1 when
/// armed and `parent` is still the parent, 0 when the parent is already gone, -1 if unsupported.
int ct_exit_with_parent(int64_t parent);
int64_t ct_get_num_threads(void);
/* The calling thread's intra-op threads (OpenMP's per-thread setting; the process default and
 * other threads keep theirs). Returns the previous count, -1 without OpenMP or for n < 1. */
int64_t ct_set_thread_intraop_threads(int64_t n);
/* The calling thread's grad and inference mode, default device and mixed-precision scope, to be
 * entered on a helper thread (with `threads` intra-op threads) and left there in reverse order. */
ct_thread_context ct_thread_context_capture(void);
void ct_thread_context_free(ct_thread_context c);
ct_thread_scope ct_thread_context_enter(ct_thread_context c, int64_t threads);
void ct_thread_context_exit(ct_thread_scope s);
const char *ct_parallel_info(void);
/* the libtorch headers this shim was compiled against, "MAJOR.MINOR.PATCH" */
const char *ct_libtorch_version(void);
/* glibc malloc: keep freed buffers up to 32 MiB in the heap (no munmap/trim churn); 1 on success */
int ct_keep_freed_memory(void);
/* libtorch's CPU tensors from a caching allocator (allocator.cpp): freed blocks of 64 KiB to
 * `largest_block` bytes kept in exact-size free lists, at most `limit_bytes` of them (a later call
 * changes both). 1 when installed, 0 if libtorch kept another allocator, -1 for a negative value. */
int ct_cache_tensor_memory(int64_t limit_bytes, int64_t largest_block);
/* frees every cached block; returns the bytes released */
int64_t ct_release_cached_tensor_memory(void);
void ct_tensor_memory_cache_stats(int64_t *cached_bytes, int64_t *hits, int64_t *misses);

/* c10d: TCPStore + ProcessGroupGloo */
ct_store ct_store_new(const char *host, uint16_t port, int64_t world_size, bool is_master,
                      int64_t timeout_ms);
void ct_store_free(ct_store s);
/* The local address through which this machine reaches `host` (written to `out`, NUL-ended). */
int ct_route_address(const char *host, char *out, size_t out_len);
/* Gloo listens on `interface` (a network interface name) when it is not NULL, otherwise on
   `address` (an IP or host name; NULL means 127.0.0.1). `timeout_ms` bounds rendezvous and
   every collective. */
ct_pg ct_pg_gloo_new(ct_store s, int64_t rank, int64_t size, int64_t timeout_ms, const char *interface,
                     const char *address);
void ct_pg_free(ct_pg pg);
/* op: 0 sum, 1 product, 2 min, 3 max */
int ct_pg_allreduce(ct_pg pg, ct_tensor *ts, int64_t n, int op);
int ct_pg_broadcast(ct_pg pg, ct_tensor *ts, int64_t n, int64_t root);
int ct_pg_barrier(ct_pg pg);

#ifdef __cplusplus
}
#endif
#endif
