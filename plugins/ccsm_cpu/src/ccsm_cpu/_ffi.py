"""The one narrow declaration of the GGML C API we call (cffi ABI mode, ggml 0.15.x).

Copied from ggml 0.15's ``ggml.h``, ``ggml-alloc.h``, ``ggml-backend.h`` and ``ggml-cpu.h`` as
vendored by ``ggml-python==0.0.45``. ABI mode trusts these lines, so the ggml-python version is
pinned exactly and `ccsm_cpu.lib` smoke-tests them when it loads the library. Every struct is
opaque except ``ggml_init_params`` (passed by value to ``ggml_init``).
"""

from __future__ import annotations

GGML_VERSION_PREFIX = "0.15."  # what ggml_version() must start with for these declarations
TENSOR_ALIGNMENT = 32  # ggml-backend's TENSOR_ALIGNMENT; pointers handed to buffer_from_ptr

# enum ggml_type (the subset we create or read)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
I32, BF16 = 26, 30

TYPE_IDS = {
    "F32": F32,
    "F16": F16,
    "BF16": BF16,
    "Q4_0": Q4_0,
    "Q4_1": Q4_1,
    "Q5_0": Q5_0,
    "Q5_1": Q5_1,
    "Q8_0": Q8_0,
    "Q2_K": Q2_K,
    "Q3_K": Q3_K,
    "Q4_K": Q4_K,
    "Q5_K": Q5_K,
    "Q6_K": Q6_K,
}
# (block size in elements, block size in bytes), checked against the library at load
TYPE_BLOCKS = {
    F32: (1, 4),
    F16: (1, 2),
    BF16: (1, 2),
    I32: (1, 4),
    Q4_0: (32, 18),
    Q4_1: (32, 20),
    Q5_0: (32, 22),
    Q5_1: (32, 24),
    Q8_0: (32, 34),
    Q2_K: (256, 84),
    Q3_K: (256, 110),
    Q4_K: (256, 144),
    Q5_K: (256, 176),
    Q6_K: (256, 210),
}

ROPE_NORMAL, ROPE_NEOX = 0, 2
SORT_ASC, SORT_DESC = 0, 1  # enum ggml_sort_order

CDEF = """
struct ggml_context;
struct ggml_tensor;
struct ggml_cgraph;
typedef struct ggml_backend * ggml_backend_t;
typedef struct ggml_backend_buffer * ggml_backend_buffer_t;
typedef struct ggml_backend_buffer_type * ggml_backend_buffer_type_t;
typedef struct ggml_gallocr * ggml_gallocr_t;

enum ggml_status { GGML_STATUS_ALLOC_FAILED = -2, GGML_STATUS_FAILED = -1,
                   GGML_STATUS_SUCCESS = 0, GGML_STATUS_ABORTED = 1 };

struct ggml_init_params {
    size_t mem_size;
    void * mem_buffer;
    bool   no_alloc;
};

const char * ggml_version(void);
const char * ggml_status_to_string(enum ggml_status status);

struct ggml_context * ggml_init(struct ggml_init_params params);
void   ggml_reset(struct ggml_context * ctx);
void   ggml_free(struct ggml_context * ctx);
size_t ggml_used_mem(const struct ggml_context * ctx);
size_t ggml_get_mem_size(const struct ggml_context * ctx);
size_t ggml_tensor_overhead(void);
size_t ggml_graph_overhead_custom(size_t size, bool grads);

int64_t ggml_blck_size(int type);
size_t  ggml_type_size(int type);
size_t  ggml_row_size(int type, int64_t ne);
size_t  ggml_nbytes(const struct ggml_tensor * tensor);
bool    ggml_is_contiguous(const struct ggml_tensor * tensor);
void *  ggml_get_data(const struct ggml_tensor * tensor);
void    ggml_set_input(struct ggml_tensor * tensor);
void    ggml_set_output(struct ggml_tensor * tensor);

struct ggml_tensor * ggml_new_tensor_4d(struct ggml_context * ctx, int type,
        int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);

struct ggml_tensor * ggml_add(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_mul(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_scale(struct ggml_context * ctx, struct ggml_tensor * a, float s);
struct ggml_tensor * ggml_sum_rows(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_silu(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_gelu_erf(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_elu(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_relu(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_sqr(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_tanh(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_scale_bias(struct ggml_context * ctx, struct ggml_tensor * a, float s, float b);
struct ggml_tensor * ggml_soft_max_ext(struct ggml_context * ctx, struct ggml_tensor * a,
        struct ggml_tensor * mask, float scale, float max_bias);
struct ggml_tensor * ggml_get_rows(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_top_k(struct ggml_context * ctx, struct ggml_tensor * a, int k);
struct ggml_tensor * ggml_argsort(struct ggml_context * ctx, struct ggml_tensor * a, int order);
struct ggml_tensor * ggml_mul_mat(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_rms_norm(struct ggml_context * ctx, struct ggml_tensor * a, float eps);
struct ggml_tensor * ggml_norm(struct ggml_context * ctx, struct ggml_tensor * a, float eps);
struct ggml_tensor * ggml_rope_ext(struct ggml_context * ctx, struct ggml_tensor * a,
        struct ggml_tensor * b, struct ggml_tensor * c, int n_dims, int mode, int n_ctx_orig,
        float freq_base, float freq_scale, float ext_factor, float attn_factor,
        float beta_fast, float beta_slow);
struct ggml_tensor * ggml_im2col(struct ggml_context * ctx, struct ggml_tensor * a,
        struct ggml_tensor * b, int s0, int s1, int p0, int p1, int d0, int d1,
        bool is_2D, int dst_type);
struct ggml_tensor * ggml_conv_transpose_1d(struct ggml_context * ctx, struct ggml_tensor * a,
        struct ggml_tensor * b, int s0, int p0, int d0);
struct ggml_tensor * ggml_pad_ext(struct ggml_context * ctx, struct ggml_tensor * a,
        int lp0, int rp0, int lp1, int rp1, int lp2, int rp2, int lp3, int rp3);
struct ggml_tensor * ggml_concat(struct ggml_context * ctx, struct ggml_tensor * a,
        struct ggml_tensor * b, int dim);
struct ggml_tensor * ggml_repeat_4d(struct ggml_context * ctx, struct ggml_tensor * a,
        int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
struct ggml_tensor * ggml_cast(struct ggml_context * ctx, struct ggml_tensor * a, int type);
struct ggml_tensor * ggml_cont(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_reshape_4d(struct ggml_context * ctx, struct ggml_tensor * a,
        int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
struct ggml_tensor * ggml_view_4d(struct ggml_context * ctx, struct ggml_tensor * a,
        int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3,
        size_t nb1, size_t nb2, size_t nb3, size_t offset);
struct ggml_tensor * ggml_permute(struct ggml_context * ctx, struct ggml_tensor * a,
        int axis0, int axis1, int axis2, int axis3);
struct ggml_tensor * ggml_set_inplace(struct ggml_context * ctx, struct ggml_tensor * a,
        struct ggml_tensor * b, size_t nb1, size_t nb2, size_t nb3, size_t offset);

struct ggml_cgraph * ggml_new_graph_custom(struct ggml_context * ctx, size_t size, bool grads);
void ggml_build_forward_expand(struct ggml_cgraph * cgraph, struct ggml_tensor * tensor);
int  ggml_graph_n_nodes(struct ggml_cgraph * cgraph);

ggml_gallocr_t ggml_gallocr_new(ggml_backend_buffer_type_t buft);
void   ggml_gallocr_free(ggml_gallocr_t galloc);
bool   ggml_gallocr_alloc_graph(ggml_gallocr_t galloc, struct ggml_cgraph * graph);
size_t ggml_gallocr_get_buffer_size(ggml_gallocr_t galloc, int buffer_id);

ggml_backend_t ggml_backend_cpu_init(void);
void ggml_backend_cpu_set_n_threads(ggml_backend_t backend_cpu, int n_threads);
void ggml_backend_free(ggml_backend_t backend);
enum ggml_status ggml_backend_graph_compute(ggml_backend_t backend, struct ggml_cgraph * cgraph);
ggml_backend_buffer_type_t ggml_backend_cpu_buffer_type(void);
ggml_backend_buffer_t ggml_backend_cpu_buffer_from_ptr(void * ptr, size_t size);
void ggml_backend_buffer_free(ggml_backend_buffer_t buffer);
enum ggml_status ggml_backend_tensor_alloc(ggml_backend_buffer_t buffer, struct ggml_tensor * tensor, void * addr);
typedef struct ggml_backend_reg * ggml_backend_reg_t;
typedef struct ggml_backend_device * ggml_backend_dev_t;
ggml_backend_reg_t ggml_backend_cpu_reg(void);
void * ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name);
ggml_backend_dev_t ggml_backend_reg_dev_get(ggml_backend_reg_t reg, size_t index);
const char * ggml_backend_buft_name(ggml_backend_buffer_type_t buft);
size_t ggml_backend_buft_get_alloc_size(ggml_backend_buffer_type_t buft, const struct ggml_tensor * tensor);
ggml_backend_buffer_t ggml_backend_buft_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size);
void * ggml_backend_buffer_get_base(ggml_backend_buffer_t buffer);
void ggml_backend_tensor_set(struct ggml_tensor * tensor, const void * data, size_t offset, size_t size);
int ggml_cpu_has_sse3(void);
int ggml_cpu_has_ssse3(void);
int ggml_cpu_has_avx2(void);
int ggml_cpu_has_avx(void);
int ggml_cpu_has_avx_vnni(void);
int ggml_cpu_has_bmi2(void);
int ggml_cpu_has_avx512(void);
int ggml_cpu_has_avx512_vbmi(void);
int ggml_cpu_has_avx512_vnni(void);
int ggml_cpu_has_avx512_bf16(void);
int ggml_cpu_has_fma(void);
int ggml_cpu_has_f16c(void);
int ggml_cpu_has_neon(void);
int ggml_cpu_has_dotprod(void);
int ggml_cpu_has_amx_int8(void);
int ggml_cpu_has_llamafile(void);
struct ggml_tensor * ggml_out_prod(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_exp(struct ggml_context * ctx, struct ggml_tensor * a);
struct ggml_tensor * ggml_set(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b,
        size_t nb1, size_t nb2, size_t nb3, size_t offset);
struct ggml_tensor * ggml_set_rows(struct ggml_context * ctx, struct ggml_tensor * a,
        struct ggml_tensor * b, struct ggml_tensor * c);
struct ggml_tensor * ggml_flash_attn_ext(struct ggml_context * ctx, struct ggml_tensor * q,
        struct ggml_tensor * k, struct ggml_tensor * v, struct ggml_tensor * mask,
        float scale, float max_bias, float logit_softcap);
struct ggml_tensor * ggml_swiglu_split(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
typedef void (*ggml_log_callback)(int level, const char * text, void * user_data);
void ggml_log_set(ggml_log_callback log_callback, void * user_data);
"""
LOG_WARN = 3  # enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5

# SIMD features the library was built with, reported by `ccsm backends` (ggml_cpu_has_<name>)
FEATURES = (
    "sse3",
    "ssse3",
    "avx",
    "avx2",
    "avx_vnni",
    "fma",
    "f16c",
    "bmi2",
    "avx512",
    "avx512_vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
    "neon",
    "dotprod",
    "llamafile",
)

# Weight types whose rows GGML's CPU_REPACK buffer interleaves for faster matrix-vector kernels
# on x86 with AVX2 (ggml 0.15: Q4_0 as 8x8, Q4_K as 8x8), and the row multiple they need.
# Other types have no x86 repacking: handing them to that buffer type crashes ggml.
REPACK_TYPES = ("Q4_0", "Q4_K")
TYPE_NAMES = {v: k for k, v in TYPE_IDS.items()}
REPACK_ROWS = 8


def make_ffi():  # -> cffi.FFI
    """A fresh ``cffi.FFI`` holding `CDEF`."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi
