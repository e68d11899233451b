// conv2d on the CPU. Four paths, chosen per shape (all keep the op table's
// contract: plain NCHW in and out, no allocation, results independent of the
// thread count except inside oneDNN's kernels):
//
// 1. oneDNN, 3x3 and strided convolutions (every U-Net conv but conv_in,
//    conv_out and the 1x1 shortcuts). Every call converts the NCHW tensors
//    to the blocked layouts oneDNN's JIT kernels want (nChw16c activations,
//    blocked weights), runs oneDNN's forward / backward-data /
//    backward-weights primitive, and converts the result back, all inside
//    the op. Primitives and reorders are created once per (shape, images per
//    chunk, threads) and cached for the life of the process (the model has
//    ~20 distinct conv shapes); the blocked copies and oneDNN's scratchpad
//    live in the op's workspace (scratchpad mode "user"). The batch runs in
//    chunks of images so that the workspace stays a few MB however large B
//    is (chunk_images). dweight is accumulated (+=) by a reorder with a sum
//    post-op. 3x3 stride-1 "same" convolutions use oneDNN's Winograd F(4x4,
//    3x3) kernels (use_winograd: 1.2-2.3x the direct kernels, rounding ~2x
//    theirs, ~1e-6 relative); others the direct JIT kernels.
// 2. 1x1 convolutions: a matrix product per image on NCHW itself, no
//    reorders (pointwise_forward / pointwise_backward).
// 3. Stride-1 convolutions with at most 4 input or output channels (conv_in,
//    conv_out): vector loops over zero-padded planes (flat_forward, ...),
//    where oneDNN's kernels padded the channels to 16 and ran at 4-20 GFLOP/s.
// 4. im2col + sgemm, the fallback when oneDNN cannot build a primitive
//    (A3FTA_CONV=gemm forces it everywhere, for comparisons).
// dbias is always a plain reduction over dout (planes in float, summed in
// double), so that it is bitwise the same whether or not dweight is asked for.
// A3FTA_CONV=dnnl sends paths 2 and 3 to oneDNN, A3FTA_CONV=nowino turns
// Winograd off; A3FTA_CONV_CHUNK=n sets the images per oneDNN call.
//
// Measured in the training step of the default Fashion-MNIST U-Net (B = 64,
// tools/bench/bench_step.c with A3FTA_PROFILE=cpu, one thread of a 2-core
// AMD EPYC Zen 5 KVM guest, CPU ms per step; oneDNN 2.6.3):
//   3x3 convs, fwd + bwd (path 1)   direct kernels 725    Winograd 411 (incl. ~68 of reorders)
//   1x1 shortcuts                   oneDNN blocked   59    GEMM on NCHW 41
//   conv_in + conv_out              oneDNN blocked   17    padded-plane loops 7
// (and at 2 threads oneDNN scaled badly there: conv_in alone took 10 ms forward).
// Earlier op-level table (tools/bench/run_ops.sh, B = 64, 2 threads),
// GFLOP/s forward / backward (backward = dinp + dweight + dbias, counted as
// 2x the forward's FLOPs), before Winograd:
//   shape                      im2col+sgemm   oneDNN plain NCHW   oneDNN blocked   PyTorch 1.13
//                              (per image)    (gemm:jit)          + reorders
//   3x3 32->32 at 32x32          54 / 47         73 / 62           ~360 / ~320     ~350 / ~210
//   3x3 64->64 at 16x16          95 / 67        177 / 84           ~450 / ~400     ~450 / ~420
// PyTorch calls the same oneDNN (with the same reorders, no Winograd).
// Chunks of 8-16 images ran as fast as the whole batch at every U-Net shape
// (the reorders of a chunk stay in L2/L3); on one thread the 4 MB chunk
// took 603 ms of CPU per training step against 618-648 for 8 images and
// 728-778 for the whole batch, and it keeps the workspace at a few MB per
// conv instead of ~33 MB for the largest (3x3 96->32 at 32x32, whole batch).
// Full tables: tools/bench/README.md.
//
// The fallback, im2col + one sgemm per image: for image b the matrix col
// (K, P), K = C*KH*KW, P = OH*OW, holds in row (c, kh, kw) the input pixels
// that kernel tap meets at each output position (zero in the padding); then
//   forward:  out_b (OC, P)  = W (OC, K) @ col (K, P) + bias
//   backward: dW (OC, K)    += dout_b (OC, P) @ col^T
//             dcol (K, P)    = W^T @ dout_b, scattered back by col2im
// A 1x1 stride-1 unpadded conv needs no im2col: col is the image itself.
#define _POSIX_C_SOURCE 200809L
#include "cpu_ops.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

CPU_FP_CONTRACT

a3_status a3_conv2d_check(const a3_conv2d_shape *s) {
  int ok = s->B > 0 && s->C > 0 && s->H > 0 && s->W > 0 && s->OC > 0 && s->KH > 0 && s->KW > 0 &&
           s->stride > 0 && s->pad_top >= 0 && s->pad_bottom >= 0 && s->pad_left >= 0 &&
           s->pad_right >= 0 && s->H + s->pad_top + s->pad_bottom >= s->KH &&
           s->W + s->pad_left + s->pad_right >= s->KW;
  if (ok) return A3_OK;
  return A3_FAIL(A3_ERR_INTERNAL,
                 "bad conv2d shape: input (%d, %d, %d, %d), weight (%d, %d, %d, %d), stride %d, "
                 "pad (top %d, bottom %d, left %d, right %d)",
                 s->B, s->C, s->H, s->W, s->OC, s->C, s->KH, s->KW, s->stride, s->pad_top,
                 s->pad_bottom, s->pad_left, s->pad_right);
}

static int is_pointwise(const a3_conv2d_shape *s) {
  return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad_top == 0 && s->pad_bottom == 0 &&
         s->pad_left == 0 && s->pad_right == 0;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }
// The workspace from its first 64-byte boundary: oneDNN's kernels (Winograd's
// among them) load their scratchpad with aligned vector loads, and a caller's
// buffer (malloc) may be 16-byte aligned only. The size query adds the slack.
static char *ws_base(void *workspace) {
  return (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
}

// ====================================================================== oneDNN path

// A3FTA_CONV=gemm forces the im2col path, A3FTA_CONV=dnnl oneDNN also where the
// direct loops would run (below); A3FTA_CONV_CHUNK=n sets the
// images per chunk (benchmarks). Read once.
static int conv_force_gemm = 0;
static int conv_no_direct = 0; // A3FTA_CONV=dnnl: oneDNN also for the direct and 1x1 paths' shapes
static int conv_no_wino = 0;   // A3FTA_CONV=nowino: oneDNN's direct kernels, no Winograd
static int conv_chunk_env = 0;
static dnnl_engine_t conv_engine = NULL;
static pthread_once_t conv_once = PTHREAD_ONCE_INIT;

static void conv_init(void) {
  const char *e = getenv("A3FTA_CONV");
  conv_force_gemm = e && strcmp(e, "gemm") == 0;
  conv_no_direct = e && strcmp(e, "dnnl") == 0;
  conv_no_wino = e && strcmp(e, "nowino") == 0;
  const char *c = getenv("A3FTA_CONV_CHUNK");
  if (c) conv_chunk_env = atoi(c);
  if (!conv_force_gemm && dnnl_engine_create(&conv_engine, dnnl_cpu, 0) != dnnl_success)
    conv_engine = NULL;
}

// Images per oneDNN call: the blocked copies of a chunk's input and output
// take at most about CHUNK_BYTES (but a chunk has at least 4 images, or all),
// which keeps the workspace a few MB. Measured at B = 64, 2 threads: chunks of
// 8 to 64 images ran at the same speed within noise (see the top).
enum { CHUNK_BYTES = 4 << 20, CHUNK_MIN = 4 };
static int chunk_images(const a3_conv2d_shape *s) {
  if (conv_chunk_env > 0) return conv_chunk_env < s->B ? conv_chunk_env : s->B;
  const size_t per_image =
      sizeof(float) *
      ((size_t)s->C * s->H * s->W + (size_t)s->OC * a3_conv2d_out_h(s) * a3_conv2d_out_w(s));
  size_t nb = CHUNK_BYTES / per_image;
  if (nb < CHUNK_MIN) nb = CHUNK_MIN;
  return nb >= (size_t)s->B ? s->B : (int)nb;
}

// A primitive with the layouts it wants and, where they differ from plain
// NCHW / OIHW, reorders into and out of them.
typedef struct {
  a3_conv2d_shape s; // B = images per chunk
  int threads;
  int ok;
  dnnl_memory_desc_t src_u, w_u, dst_u, b_u; // plain
  // forward
  dnnl_primitive_t fwd, f_src_in, f_w_in, f_dst_out;
  dnnl_memory_desc_t f_src, f_w, f_dst, f_scr;
  // backward data
  dnnl_primitive_t bd, d_ddst_in, d_w_in, d_dsrc_out;
  dnnl_memory_desc_t d_dsrc, d_w, d_ddst, d_scr;
  // backward weights; w_dw_out accumulates (sum post-op)
  dnnl_primitive_t bw, w_src_in, w_ddst_in, w_dw_out;
  dnnl_memory_desc_t w_src, w_dw, w_ddst, w_scr;
  size_t ws_fwd, ws_bwd; // workspace bytes
} conv_prims;

enum { CACHE_MAX = 256 };
static conv_prims *cache[CACHE_MAX];
static int cache_n = 0;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

#define DN(call)                                                                                   \
  do {                                                                                             \
    if ((call) != dnnl_success) return 0;                                                          \
  } while (0)

// reorder a -> b, or NULL when the layouts are the same; *ok = 0 on failure.
static dnnl_primitive_t make_reorder(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                                     int accumulate, int *ok) {
  if (!accumulate && dnnl_memory_desc_equal(a, b)) return NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t p = NULL;
  int good = dnnl_primitive_attr_create(&attr) == dnnl_success;
  if (good && accumulate) {
    good = dnnl_post_ops_create(&po) == dnnl_success &&
           dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
           dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
  }
  good = good && dnnl_reorder_primitive_desc_create(&pd, a, conv_engine, b, conv_engine, attr) ==
                     dnnl_success;
  good = good && dnnl_primitive_create(&p, pd) == dnnl_success;
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (!good) *ok = 0;
  return good ? p : NULL;
}

static void copy_md(dnnl_memory_desc_t *dst, const_dnnl_primitive_desc_t pd, dnnl_query_t what) {
  const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what, 0);
  if (md)
    *dst = *md;
  else
    memset(dst, 0, sizeof *dst); // zero md: size 0
}

static int build_prims(conv_prims *e, dnnl_alg_kind_t alg) {
  const a3_conv2d_shape *s = &e->s;
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  dnnl_dims_t sd = {s->B, s->C, s->H, s->W}, wd = {s->OC, s->C, s->KH, s->KW}, bd = {s->OC},
              dd = {s->B, s->OC, OH, OW}, strides = {s->stride, s->stride},
              padl = {s->pad_top, s->pad_left}, padr = {s->pad_bottom, s->pad_right};
  dnnl_memory_desc_t src_a, w_a, dst_a;
  DN(dnnl_memory_desc_init_by_tag(&e->src_u, 4, sd, dnnl_f32, dnnl_nchw));
  DN(dnnl_memory_desc_init_by_tag(&e->w_u, 4, wd, dnnl_f32, dnnl_oihw));
  DN(dnnl_memory_desc_init_by_tag(&e->b_u, 1, bd, dnnl_f32, dnnl_x));
  DN(dnnl_memory_desc_init_by_tag(&e->dst_u, 4, dd, dnnl_f32, dnnl_nchw));
  DN(dnnl_memory_desc_init_by_tag(&src_a, 4, sd, dnnl_f32, dnnl_format_tag_any));
  DN(dnnl_memory_desc_init_by_tag(&w_a, 4, wd, dnnl_f32, dnnl_format_tag_any));
  DN(dnnl_memory_desc_init_by_tag(&dst_a, 4, dd, dnnl_f32, dnnl_format_tag_any));

  dnnl_primitive_attr_t attr;
  DN(dnnl_primitive_attr_create(&attr));
  int ok = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
  dnnl_convolution_desc_t fd, bdd, bwd;
  dnnl_primitive_desc_t fpd = NULL, bdpd = NULL, bwpd = NULL;
  ok = ok &&
       dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, alg, &src_a, &w_a, &e->b_u,
                                          &dst_a, strides, padl, padr) == dnnl_success;
  ok = ok && dnnl_primitive_desc_create(&fpd, &fd, attr, conv_engine, NULL) == dnnl_success;
  ok = ok && dnnl_convolution_backward_data_desc_init(&bdd, alg, &src_a, &w_a, &dst_a, strides,
                                                      padl, padr) == dnnl_success;
  ok = ok && dnnl_primitive_desc_create(&bdpd, &bdd, attr, conv_engine, fpd) == dnnl_success;
  ok = ok && dnnl_convolution_backward_weights_desc_init(&bwd, alg, &src_a, &w_a, NULL, &dst_a,
                                                         strides, padl, padr) == dnnl_success;
  ok = ok && dnnl_primitive_desc_create(&bwpd, &bwd, attr, conv_engine, fpd) == dnnl_success;
  dnnl_primitive_attr_destroy(attr);
  if (ok) {
    copy_md(&e->f_src, fpd, dnnl_query_src_md);
    copy_md(&e->f_w, fpd, dnnl_query_weights_md);
    copy_md(&e->f_dst, fpd, dnnl_query_dst_md);
    copy_md(&e->f_scr, fpd, dnnl_query_scratchpad_md);
    copy_md(&e->d_dsrc, bdpd, dnnl_query_diff_src_md);
    copy_md(&e->d_w, bdpd, dnnl_query_weights_md);
    copy_md(&e->d_ddst, bdpd, dnnl_query_diff_dst_md);
    copy_md(&e->d_scr, bdpd, dnnl_query_scratchpad_md);
    copy_md(&e->w_src, bwpd, dnnl_query_src_md);
    copy_md(&e->w_dw, bwpd, dnnl_query_diff_weights_md);
    copy_md(&e->w_ddst, bwpd, dnnl_query_diff_dst_md);
    copy_md(&e->w_scr, bwpd, dnnl_query_scratchpad_md);
    ok = dnnl_primitive_create(&e->fwd, fpd) == dnnl_success &&
         dnnl_primitive_create(&e->bd, bdpd) == dnnl_success &&
         dnnl_primitive_create(&e->bw, bwpd) == dnnl_success;
  }
  if (fpd) dnnl_primitive_desc_destroy(fpd);
  if (bdpd) dnnl_primitive_desc_destroy(bdpd);
  if (bwpd) dnnl_primitive_desc_destroy(bwpd);
  if (!ok) return 0;
  e->f_src_in = make_reorder(&e->src_u, &e->f_src, 0, &ok);
  e->f_w_in = make_reorder(&e->w_u, &e->f_w, 0, &ok);
  e->f_dst_out = make_reorder(&e->f_dst, &e->dst_u, 0, &ok);
  e->d_ddst_in = make_reorder(&e->dst_u, &e->d_ddst, 0, &ok);
  e->d_w_in = make_reorder(&e->w_u, &e->d_w, 0, &ok);
  e->d_dsrc_out = make_reorder(&e->d_dsrc, &e->src_u, 0, &ok);
  e->w_src_in = make_reorder(&e->src_u, &e->w_src, 0, &ok);
  e->w_ddst_in = make_reorder(&e->dst_u, &e->w_ddst, 0, &ok);
  e->w_dw_out = make_reorder(&e->w_dw, &e->w_u, 1, &ok);
  if (!ok) return 0;

    // Workspace bytes (layouts in dnnl_forward_chunk, dnnl_backward_chunk).
#define BLK(prim, md) ((prim) ? align64(dnnl_memory_desc_get_size(&(md))) : 0)
  e->ws_fwd = BLK(e->f_src_in, e->f_src) + BLK(e->f_w_in, e->f_w) + BLK(e->f_dst_out, e->f_dst) +
              align64(dnnl_memory_desc_get_size(&e->f_scr));
  size_t x = BLK(e->w_src_in, e->w_src), dx = BLK(e->d_dsrc_out, e->d_dsrc);
  size_t scr = align64(dnnl_memory_desc_get_size(&e->d_scr));
  size_t scr_w = align64(dnnl_memory_desc_get_size(&e->w_scr));
  const int share = e->d_ddst_in && e->w_ddst_in && dnnl_memory_desc_equal(&e->d_ddst, &e->w_ddst);
  e->ws_bwd = BLK(e->d_ddst_in, e->d_ddst) + (share ? 0 : BLK(e->w_ddst_in, e->w_ddst)) +
              (x > dx ? x : dx) + BLK(e->d_w_in, e->d_w) +
              align64(dnnl_memory_desc_get_size(&e->w_dw)) + (scr > scr_w ? scr : scr_w);
#undef BLK
  return 1;
}

static void destroy_prims(conv_prims *e) {
  dnnl_primitive_t *all[] = {&e->fwd, &e->f_src_in,  &e->f_w_in,    &e->f_dst_out,
                             &e->bd,  &e->d_ddst_in, &e->d_w_in,    &e->d_dsrc_out,
                             &e->bw,  &e->w_src_in,  &e->w_ddst_in, &e->w_dw_out};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (*all[i]) dnnl_primitive_destroy(*all[i]), *all[i] = NULL;
}

static int same_shape(const a3_conv2d_shape *a, const a3_conv2d_shape *b) {
  return a->B == b->B && a->C == b->C && a->H == b->H && a->W == b->W && a->OC == b->OC &&
         a->KH == b->KH && a->KW == b->KW && a->stride == b->stride && a->pad_top == b->pad_top &&
         a->pad_bottom == b->pad_bottom && a->pad_left == b->pad_left &&
         a->pad_right == b->pad_right;
}

// Winograd F(4x4, 3x3) (oneDNN's jit_wino_4x3) for 3x3 stride-1 "same"
// convolutions: 1.2-1.7x the direct kernels' speed forward, 1.5-2.3x for
// the data gradient, 1.2-1.6x for the weight gradient at every U-Net shape
// (B = 16-64, C = 32-128, 8x8 to 32x32; one Zen 5 core, the direct kernels
// at 200-250 GFLOP/s). Its rounding differs from the direct sum's (the
// transforms add and subtract scaled inputs): about 1e-6 relative on the
// U-Net's outputs, well inside the tests' tolerances. A3FTA_CONV=nowino
// keeps the direct kernels everywhere. A shape oneDNN has no Winograd
// kernel for (channel counts, ISA) falls back to the direct ones.
static int use_winograd(const a3_conv2d_shape *s) {
  return !conv_no_wino && s->KH == 3 && s->KW == 3 && s->stride == 1 && s->pad_top == 1 &&
         s->pad_bottom == 1 && s->pad_left == 1 && s->pad_right == 1;
}

// The cached primitives for s with B images (a chunk), or NULL: use im2col.
static const conv_prims *get_prims(const a3_conv2d_shape *s, int B) {
  pthread_once(&conv_once, conv_init);
  if (!conv_engine) return NULL;
  a3_conv2d_shape key = *s;
  key.B = B;
  const int threads = omp_get_max_threads();
  pthread_mutex_lock(&cache_mu);
  conv_prims *found = NULL;
  for (int i = 0; i < cache_n && !found; i++)
    if (cache[i]->threads == threads && same_shape(&cache[i]->s, &key)) found = cache[i];
  if (!found && cache_n < CACHE_MAX) {
    conv_prims *e = calloc(1, sizeof *e);
    if (e) {
      e->s = key;
      e->threads = threads;
      e->ok = use_winograd(&key) && build_prims(e, dnnl_convolution_winograd);
      if (!e->ok) {
        destroy_prims(e);
        e->ok = build_prims(e, dnnl_convolution_direct);
      }
      if (!e->ok) destroy_prims(e);
      cache[cache_n++] = found = e;
    }
  }
  pthread_mutex_unlock(&cache_mu);
  return found && found->ok ? found : NULL;
}

// Frees the cache at exit (keeps leak checkers quiet).
static void conv_cache_free(void) {
  for (int i = 0; i < cache_n; i++) destroy_prims(cache[i]), free(cache[i]);
  cache_n = 0;
  if (conv_engine) dnnl_engine_destroy(conv_engine), conv_engine = NULL;
}
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;
static void register_atexit(void) { atexit(conv_cache_free); }

typedef struct {
  dnnl_stream_t stream;
  int ok;
} runner;

static dnnl_memory_t mem(runner *r, const dnnl_memory_desc_t *md, const void *ptr) {
  dnnl_memory_t m = NULL;
  if (r->ok && dnnl_memory_create(&m, md, conv_engine, (void *)(uintptr_t)ptr) != dnnl_success) {
    r->ok = 0;
    m = NULL;
  }
  return m;
}

static void exec(runner *r, dnnl_primitive_t p, int n, const dnnl_exec_arg_t *args) {
  for (int i = 0; i < n; i++)
    if (!args[i].memory) r->ok = 0;
  if (r->ok && dnnl_primitive_execute(p, r->stream, n, args) != dnnl_success) r->ok = 0;
}

// dst = reorder(src) (+= when the primitive has a sum post-op); p NULL: nothing to do.
static void run_reorder(runner *r, dnnl_primitive_t p, const dnnl_memory_desc_t *src_md,
                        const void *src, const dnnl_memory_desc_t *dst_md, void *dst) {
  if (!p || !r->ok) return;
  dnnl_memory_t a = mem(r, src_md, src), b = mem(r, dst_md, dst);
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
  exec(r, p, 2, args);
  if (a) dnnl_memory_destroy(a);
  if (b) dnnl_memory_destroy(b);
}

static void release(dnnl_memory_t *m, int n) {
  for (int i = 0; i < n; i++)
    if (m[i]) dnnl_memory_destroy(m[i]);
}

// One chunk of the forward. Returns 0 if oneDNN failed.
static int dnnl_forward_chunk(const conv_prims *e, float *out, const float *inp,
                              const float *weight, const float *bias, char *ws, int weights_ready) {
  runner r = {NULL, 1};
  if (dnnl_stream_create(&r.stream, conv_engine, dnnl_stream_default_flags) != dnnl_success)
    return 0;
  char *p = ws; // [w | src | dst | scratch]: the weights first, so that they stay put
  void *w = e->f_w_in ? p : (void *)(uintptr_t)weight;
  if (e->f_w_in) p += align64(dnnl_memory_desc_get_size(&e->f_w));
  void *src = e->f_src_in ? p : (void *)(uintptr_t)inp;
  if (e->f_src_in) p += align64(dnnl_memory_desc_get_size(&e->f_src));
  void *dst = e->f_dst_out ? (void *)p : (void *)out;
  if (e->f_dst_out) p += align64(dnnl_memory_desc_get_size(&e->f_dst));
  void *scr = p;
  run_reorder(&r, e->f_src_in, &e->src_u, inp, &e->f_src, src);
  if (!weights_ready) run_reorder(&r, e->f_w_in, &e->w_u, weight, &e->f_w, w);
  dnnl_memory_t m[5] = {mem(&r, &e->f_src, src), mem(&r, &e->f_w, w), mem(&r, &e->b_u, bias),
                        mem(&r, &e->f_dst, dst), mem(&r, &e->f_scr, scr)};
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, m[0]},
                             {DNNL_ARG_WEIGHTS, m[1]},
                             {DNNL_ARG_BIAS, m[2]},
                             {DNNL_ARG_DST, m[3]},
                             {DNNL_ARG_SCRATCHPAD, m[4]}};
  exec(&r, e->fwd, 5, args);
  release(m, 5);
  run_reorder(&r, e->f_dst_out, &e->f_dst, dst, &e->dst_u, out);
  dnnl_stream_wait(r.stream);
  dnnl_stream_destroy(r.stream);
  return r.ok;
}

static int dnnl_backward_chunk(const conv_prims *e, float *dinp, float *dweight, const float *dout,
                               const float *inp, const float *weight, char *ws, int weights_ready) {
  runner r = {NULL, 1};
  if (dnnl_stream_create(&r.stream, conv_engine, dnnl_stream_default_flags) != dnnl_success)
    return 0;
  char *p = ws; // [w | dw | ddst for bwd-data | ddst for bwd-weights | src, then dsrc | scratch]
  void *w = e->d_w_in ? p : (void *)(uintptr_t)weight;
  if (e->d_w_in) p += align64(dnnl_memory_desc_get_size(&e->d_w));
  void *dw = p;
  p += align64(dnnl_memory_desc_get_size(&e->w_dw));
  void *ddst_d = e->d_ddst_in ? p : (void *)(uintptr_t)dout;
  if (e->d_ddst_in) p += align64(dnnl_memory_desc_get_size(&e->d_ddst));
  // bwd-data's ddst may be bwd-weights' too: reorder once.
  const int share_ddst =
      e->d_ddst_in && e->w_ddst_in && dnnl_memory_desc_equal(&e->d_ddst, &e->w_ddst);
  void *ddst_w = share_ddst ? ddst_d : e->w_ddst_in ? p : (void *)(uintptr_t)dout;
  if (e->w_ddst_in && !share_ddst) p += align64(dnnl_memory_desc_get_size(&e->w_ddst));
  char *x = p; // src for bwd-weights, then dsrc from bwd-data
  size_t xs = e->w_src_in ? align64(dnnl_memory_desc_get_size(&e->w_src)) : 0;
  size_t dxs = e->d_dsrc_out ? align64(dnnl_memory_desc_get_size(&e->d_dsrc)) : 0;
  p += xs > dxs ? xs : dxs;
  void *scr = p;

  if (dweight) {
    void *src = e->w_src_in ? (void *)x : (void *)(uintptr_t)inp;
    run_reorder(&r, e->w_src_in, &e->src_u, inp, &e->w_src, src);
    run_reorder(&r, e->w_ddst_in, &e->dst_u, dout, &e->w_ddst, ddst_w);
    dnnl_memory_t m[4] = {mem(&r, &e->w_src, src), mem(&r, &e->w_ddst, ddst_w),
                          mem(&r, &e->w_dw, dw), mem(&r, &e->w_scr, scr)};
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, m[0]},
                               {DNNL_ARG_DIFF_DST, m[1]},
                               {DNNL_ARG_DIFF_WEIGHTS, m[2]},
                               {DNNL_ARG_SCRATCHPAD, m[3]}};
    exec(&r, e->bw, 4, args);
    release(m, 4);
    run_reorder(&r, e->w_dw_out, &e->w_dw, dw, &e->w_u, dweight); // dweight += dw
  }
  if (dinp) {
    if (!(dweight && share_ddst))
      run_reorder(&r, e->d_ddst_in, &e->dst_u, dout, &e->d_ddst, ddst_d);
    if (!weights_ready) run_reorder(&r, e->d_w_in, &e->w_u, weight, &e->d_w, w);
    void *dsrc = e->d_dsrc_out ? (void *)x : (void *)dinp;
    dnnl_memory_t m[4] = {mem(&r, &e->d_ddst, ddst_d), mem(&r, &e->d_w, w),
                          mem(&r, &e->d_dsrc, dsrc), mem(&r, &e->d_scr, scr)};
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_DIFF_DST, m[0]},
                               {DNNL_ARG_WEIGHTS, m[1]},
                               {DNNL_ARG_DIFF_SRC, m[2]},
                               {DNNL_ARG_SCRATCHPAD, m[3]}};
    exec(&r, e->bd, 4, args);
    release(m, 4);
    run_reorder(&r, e->d_dsrc_out, &e->d_dsrc, dsrc, &e->src_u, dinp);
  }
  dnnl_stream_wait(r.stream);
  dnnl_stream_destroy(r.stream);
  return r.ok;
}

// ====================================================================== im2col path

static size_t im2col_workspace_size(const a3_conv2d_shape *s) {
  if (is_pointwise(s)) return 0;
  size_t K = (size_t)s->C * s->KH * s->KW;
  size_t P = (size_t)a3_conv2d_out_h(s) * a3_conv2d_out_w(s);
  return K * P * sizeof(float);
}

// col (C*KH*KW, OH*OW) from one image (C, H, W).
static void im2col(float *col, const float *img, const a3_conv2d_shape *s, int OH, int OW) {
  for (int c = 0; c < s->C; c++) {
    for (int kh = 0; kh < s->KH; kh++) {
      for (int kw = 0; kw < s->KW; kw++) {
        float *row = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
          int ih = oh * s->stride - s->pad_top + kh;
          float *dst = row + (size_t)oh * OW;
          if (ih < 0 || ih >= s->H) {
            memset(dst, 0, (size_t)OW * sizeof(float));
            continue;
          }
          const float *src = img + ((size_t)c * s->H + ih) * s->W;
          for (int ow = 0; ow < OW; ow++) {
            int iw = ow * s->stride - s->pad_left + kw;
            dst[ow] = (iw >= 0 && iw < s->W) ? src[iw] : 0.0f;
          }
        }
      }
    }
  }
}

// img (C, H, W) += the scatter of col (C*KH*KW, OH*OW); the inverse of im2col's gather.
static void col2im(float *img, const float *col, const a3_conv2d_shape *s, int OH, int OW) {
  for (int c = 0; c < s->C; c++) {
    for (int kh = 0; kh < s->KH; kh++) {
      for (int kw = 0; kw < s->KW; kw++) {
        const float *row = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
          int ih = oh * s->stride - s->pad_top + kh;
          if (ih < 0 || ih >= s->H) continue;
          float *dst = img + ((size_t)c * s->H + ih) * s->W;
          const float *src = row + (size_t)oh * OW;
          for (int ow = 0; ow < OW; ow++) {
            int iw = ow * s->stride - s->pad_left + kw;
            if (iw >= 0 && iw < s->W) dst[iw] += src[ow];
          }
        }
      }
    }
  }
}

static void im2col_forward(const a3_conv2d_shape *s, float *out, const float *inp,
                           const float *weight, const float *bias, void *workspace) {
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  const int K = s->C * s->KH * s->KW, P = OH * OW;
  for (int b = 0; b < s->B; b++) {
    const float *img = inp + (size_t)b * s->C * s->H * s->W;
    float *out_b = out + (size_t)b * s->OC * P;
    const float *col = img;
    if (!is_pointwise(s)) {
      im2col(workspace, img, s, OH, OW);
      col = workspace;
    }
    // The bias is preloaded so the GEMM adds onto it (beta = 1).
    for (int oc = 0; oc < s->OC && bias; oc++)
      for (int p = 0; p < P; p++) out_b[(size_t)oc * P + p] = bias[oc];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->OC, P, K, 1.0f, weight, K, col, P,
                bias ? 1.0f : 0.0f, out_b, P);
  }
}

static void im2col_backward(const a3_conv2d_shape *s, float *dinp, float *dweight,
                            const float *dout, const float *inp, const float *weight,
                            void *workspace) {
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  const int K = s->C * s->KH * s->KW, P = OH * OW;
  const size_t img_size = (size_t)s->C * s->H * s->W;
  const int pointwise = is_pointwise(s);
  for (int b = 0; b < s->B; b++) {
    const float *dout_b = dout + (size_t)b * s->OC * P;
    if (dweight) {
      const float *col = inp + (size_t)b * img_size;
      if (!pointwise) {
        im2col(workspace, col, s, OH, OW);
        col = workspace;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->OC, K, P, 1.0f, dout_b, P, col, P,
                  1.0f, dweight, K);
    }
    if (dinp) {
      float *dimg = dinp + (size_t)b * img_size;
      // dcol goes straight into dinp for a pointwise conv, else through the workspace.
      float *dcol = pointwise ? dimg : workspace;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, s->OC, 1.0f, weight, K, dout_b, P,
                  0.0f, dcol, P);
      if (!pointwise) {
        memset(dimg, 0, img_size * sizeof(float));
        col2im(dimg, dcol, s, OH, OW);
      }
    }
  }
}

// ====================================================================== direct path

// Stride-1 convolutions with at most DIRECT_MAX_C input or output channels
// and a kernel larger than 1x1: the U-Net's conv_in (1 or 3 channels in) and
// conv_out (1 or 3 out). oneDNN's blocked kernels pad the channels to 16 and
// ran them at 4-20 GFLOP/s (conv_in's forward 10 ms, its weight gradient 7.7
// ms per call at B = 64, 32x32, 2 threads). Here each plane is copied into a
// zero-padded buffer on the stack (its rows Wp = W + pads wide), so that a
// kernel tap is one long vector loop over the whole plane: out[q] += w *
// padded[q + kh * Wp + kw] for q over OH rows of Wp (the Wp - OW extra
// columns are computed and dropped). Planes too large for the buffers
// (larger than about 88x88), or pads of a kernel's size or more, go to
// oneDNN. Every output (a plane, a weight tap) is computed by one thread in
// a fixed order, so the results do not depend on the thread count. No
// workspace (the buffers, up to 160 KB, are on the threads' stacks).
enum { DIRECT_MAX_C = 4, DIRECT_MAX_TAPS = 49, FLAT_BUF = 8192 /* floats per plane buffer */ };

// Padded planes fit the stack buffers (forward and weight gradient: the input
// padded as the conv pads it; data gradient: dout padded by kernel - 1 - pad).
static int flat_ok(const a3_conv2d_shape *s) {
  const size_t Hp = (size_t)s->H + s->pad_top + s->pad_bottom,
               Wp = (size_t)s->W + s->pad_left + s->pad_right;
  const size_t Hd = (size_t)s->H + s->KH - 1, Wd = (size_t)s->W + s->KW - 1;
  return s->pad_top < s->KH && s->pad_bottom < s->KH && s->pad_left < s->KW &&
         s->pad_right < s->KW && Hp * Wp + (size_t)s->KW <= FLAT_BUF &&
         Hd * Wd + (size_t)s->KW <= FLAT_BUF;
}

static int use_direct(const a3_conv2d_shape *s) {
  return !conv_force_gemm && !conv_no_direct && s->stride == 1 && s->KH * s->KW > 1 &&
         s->KH * s->KW <= DIRECT_MAX_TAPS && (s->C <= DIRECT_MAX_C || s->OC <= DIRECT_MAX_C) &&
         flat_ok(s);
}

// dst (rows x width, then `tail` more floats) = zeros with src (H, W) at (top, left).
static void pad_plane(float *dst, const float *src, int H, int W, int top, int left, int rows,
                      int width, int tail) {
  memset(dst, 0, ((size_t)rows * width + (size_t)tail) * sizeof(float));
  for (int h = 0; h < H; h++)
    memcpy(dst + (size_t)(h + top) * width + left, src + (size_t)h * W, (size_t)W * sizeof(float));
}

// acc[0, n) += sum over taps of w[kh, kw] * src[q + kh * rs + kw] (rs: row
// stride of src); flip: the taps' weights mirrored (w[KH-1-kh, KW-1-kw]).
CPU_CLONES static void flat_taps(float *acc, const float *src, const float *w, int KH, int KW,
                                 int rs, int n, int flip) {
  for (int kh = 0; kh < KH; kh++) {
    for (int kw = 0; kw < KW; kw++) {
      const float wv = flip ? w[(KH - 1 - kh) * KW + (KW - 1 - kw)] : w[kh * KW + kw];
      const float *x = src + (size_t)kh * rs + kw;
#pragma omp simd
      for (int q = 0; q < n; q++) acc[q] += wv * x[q];
    }
  }
}

// sums[t] = dot(a[0, n), b[t's offset ...]) for every tap t = (kh, kw).
CPU_CLONES static void flat_dots(float *sums, const float *a, const float *b, int KH, int KW,
                                 int rs, int n) {
  for (int kh = 0; kh < KH; kh++) {
    for (int kw = 0; kw < KW; kw++) {
      const float *x = b + (size_t)kh * rs + kw;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int q = 0; q < n; q++) sum += a[q] * x[q];
      sums[kh * KW + kw] = sum;
    }
  }
}

static void flat_forward(const a3_conv2d_shape *s, float *out, const float *inp,
                         const float *weight, const float *bias) {
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  const int Hp = s->H + s->pad_top + s->pad_bottom, Wp = s->W + s->pad_left + s->pad_right;
  const size_t plane = (size_t)Hp * Wp + s->KW, taps = (size_t)s->KH * s->KW;
  const int pad_all = s->C <= DIRECT_MAX_C; // else OC is small: pad one channel at a time
#pragma omp parallel for schedule(static)
  for (int b = 0; b < s->B; b++) {
    float pbuf[DIRECT_MAX_C * FLAT_BUF], acc[FLAT_BUF];
    const float *img = inp + (size_t)b * s->C * s->H * s->W;
    for (int c = 0; pad_all && c < s->C; c++)
      pad_plane(pbuf + c * plane, img + (size_t)c * s->H * s->W, s->H, s->W, s->pad_top,
                s->pad_left, Hp, Wp, s->KW);
    for (int oc = 0; oc < s->OC; oc++) {
      memset(acc, 0, (size_t)OH * Wp * sizeof(float));
      for (int c = 0; c < s->C; c++) {
        const float *pc = pbuf + (pad_all ? c * plane : 0);
        if (!pad_all)
          pad_plane(pbuf, img + (size_t)c * s->H * s->W, s->H, s->W, s->pad_top, s->pad_left, Hp,
                    Wp, s->KW);
        flat_taps(acc, pc, weight + ((size_t)oc * s->C + c) * taps, s->KH, s->KW, Wp, OH * Wp, 0);
      }
      float *o = out + ((size_t)b * s->OC + oc) * OH * OW;
      const float bv = bias ? bias[oc] : 0.0f;
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) o[(size_t)oh * OW + ow] = acc[(size_t)oh * Wp + ow] + bv;
    }
  }
}

// dinp[b, c] = sum over oc and taps of w[oc, c, kh, kw] * dout[b, oc, ih + pt - kh, iw + pl - kw]:
// dout padded by (KH - 1 - pt, KW - 1 - pl) into rows Wd = W + KW - 1 wide,
// correlated with the mirrored kernel.
static void flat_backward_data(const a3_conv2d_shape *s, float *dinp, const float *dout,
                               const float *weight) {
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  const int Hd = s->H + s->KH - 1, Wd = s->W + s->KW - 1;
  const size_t plane = (size_t)Hd * Wd + s->KW, taps = (size_t)s->KH * s->KW;
  const int pad_all = s->OC <= DIRECT_MAX_C; // else C is small: pad one dout plane at a time
#pragma omp parallel for schedule(static)
  for (int b = 0; b < s->B; b++) {
    float dbuf[DIRECT_MAX_C * FLAT_BUF], acc[FLAT_BUF];
    const float *db = dout + (size_t)b * s->OC * OH * OW;
    for (int oc = 0; pad_all && oc < s->OC; oc++)
      pad_plane(dbuf + oc * plane, db + (size_t)oc * OH * OW, OH, OW, s->KH - 1 - s->pad_top,
                s->KW - 1 - s->pad_left, Hd, Wd, s->KW);
    for (int c = 0; c < s->C; c++) {
      memset(acc, 0, (size_t)s->H * Wd * sizeof(float));
      for (int oc = 0; oc < s->OC; oc++) {
        if (!pad_all)
          pad_plane(dbuf, db + (size_t)oc * OH * OW, OH, OW, s->KH - 1 - s->pad_top,
                    s->KW - 1 - s->pad_left, Hd, Wd, s->KW);
        flat_taps(acc, dbuf + (pad_all ? oc * plane : 0), weight + ((size_t)oc * s->C + c) * taps,
                  s->KH, s->KW, Wd, s->H * Wd, 1);
      }
      float *d = dinp + ((size_t)b * s->C + c) * s->H * s->W;
      for (int ih = 0; ih < s->H; ih++)
        memcpy(d + (size_t)ih * s->W, acc + (size_t)ih * Wd, (size_t)s->W * sizeof(float));
    }
  }
}

// dweight[oc, c] += sum over images of the correlation of dout[b, oc] (its
// rows widened to Wp with zeros) with the padded input plane c: a float dot
// per image and tap, those summed in double in image order.
static void flat_backward_weight(const a3_conv2d_shape *s, float *dweight, const float *dout,
                                 const float *inp) {
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  const int Hp = s->H + s->pad_top + s->pad_bottom, Wp = s->W + s->pad_left + s->pad_right;
  const int taps = s->KH * s->KW;
  const long pairs = (long)s->OC * s->C;
#pragma omp parallel for schedule(static)
  for (long pr = 0; pr < pairs; pr++) {
    const int oc = (int)(pr / s->C), c = (int)(pr % s->C);
    float pbuf[FLAT_BUF], dbuf[FLAT_BUF], sums[DIRECT_MAX_TAPS];
    double acc[DIRECT_MAX_TAPS] = {0};
    for (int b = 0; b < s->B; b++) {
      pad_plane(pbuf, inp + ((size_t)b * s->C + c) * s->H * s->W, s->H, s->W, s->pad_top,
                s->pad_left, Hp, Wp, s->KW);
      pad_plane(dbuf, dout + ((size_t)b * s->OC + oc) * OH * OW, OH, OW, 0, 0, OH, Wp, 0);
      flat_dots(sums, dbuf, pbuf, s->KH, s->KW, Wp, OH * Wp);
      for (int t = 0; t < taps; t++) acc[t] += sums[t];
    }
    float *dw = dweight + (size_t)pr * taps;
    for (int t = 0; t < taps; t++) dw[t] += (float)acc[t];
  }
}

static void direct_forward(const a3_conv2d_shape *s, float *out, const float *inp,
                           const float *weight, const float *bias) {
  flat_forward(s, out, inp, weight, bias);
}

static void direct_backward(const a3_conv2d_shape *s, float *dinp, float *dweight,
                            const float *dout, const float *inp, const float *weight) {
  if (dweight) flat_backward_weight(s, dweight, dout, inp);
  if (dinp) flat_backward_data(s, dinp, dout, weight);
}

// ====================================================================== 1x1 convolutions as GEMMs

// A 1x1 stride-1 unpadded convolution on NCHW is a matrix product per image,
// with no layout change at all: out_b (OC, P) = W (OC, C) x_b (C, P), P = H*W.
// oneDNN's blocked 1x1 kernels needed the same reorders as a 3x3 conv for a
// ninth of the arithmetic, and ran the U-Net's shortcuts at 80-130 GFLOP/s
// on one core with them. Forward and data gradient: images split over the
// threads, one single-threaded sgemm each. Weight gradient: dW = sum over b
// of dout_b x_b^T, a product of two K-contiguous operands, which oneDNN's
// sgemm runs at ~30 GFLOP/s (K = P = 1024); so the smaller of dout_b and x_b
// is transposed first (a tile copy) and the product runs as a plain one at
// 130-230 GFLOP/s. The batch is cut into PW_GROUPS fixed groups of images
// (not one per thread, so the sums do not depend on the thread count); each
// group sums into its own slot of the workspace, and the slots are added in
// order at the end.
enum { PW_GROUPS = 8 };

static int use_pointwise(const a3_conv2d_shape *s) {
  return !conv_force_gemm && !conv_no_direct && is_pointwise(s);
}

// Per group: its partial sum (OC * C) and one transposed operand (P * min(C, OC)).
static size_t pw_slot_floats(const a3_conv2d_shape *s) {
  const size_t small = (size_t)(s->OC <= s->C ? s->OC : s->C);
  return align64(((size_t)s->OC * s->C + (size_t)s->H * s->W * small) * sizeof(float)) /
         sizeof(float);
}

static size_t pointwise_workspace_size(const a3_conv2d_shape *s) {
  return (size_t)PW_GROUPS * pw_slot_floats(s) * sizeof(float) + 64;
}

static void pointwise_forward(const a3_conv2d_shape *s, float *out, const float *inp,
                              const float *weight, const float *bias) {
  const int P = s->H * s->W;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < s->B; b++) {
    float *o = out + (size_t)b * s->OC * P;
    for (int oc = 0; oc < s->OC && bias; oc++)
      for (int p = 0; p < P; p++) o[(size_t)oc * P + p] = bias[oc];
    cpu_sgemm('N', 'N', s->OC, P, s->C, 1.0f, weight, s->C, inp + (size_t)b * s->C * P, P,
              bias ? 1.0f : 0.0f, o, P);
  }
}

// dst (cols, rows) = src (rows, cols)^T, in 32x32 tiles.
static void transpose(float *dst, const float *src, int rows, int cols) {
  enum { TILE = 32 };
  for (int r0 = 0; r0 < rows; r0 += TILE)
    for (int c0 = 0; c0 < cols; c0 += TILE) {
      const int r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < cols ? c0 + TILE : cols;
      for (int r = r0; r < r1; r++)
        for (int c = c0; c < c1; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
    }
}

static void pointwise_backward(const a3_conv2d_shape *s, float *dinp, float *dweight,
                               const float *dout, const float *inp, const float *weight,
                               void *workspace) {
  const int P = s->H * s->W, OC = s->OC, C = s->C;
  if (dinp) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < s->B; b++) // dx_b (C, P) = W^T (C, OC) dout_b (OC, P)
      cpu_sgemm('T', 'N', C, P, OC, 1.0f, weight, C, dout + (size_t)b * OC * P, P, 0.0f,
                dinp + (size_t)b * C * P, P);
  }
  if (!dweight) return;
  // swap: transpose dout_b and sum dW^T (C, OC) = x_b doutT_b; else transpose
  // x_b and sum dW (OC, C) = dout_b xT_b.
  const int swap = OC <= C;
  const size_t slot = pw_slot_floats(s), nw = (size_t)OC * C;
  float *ws = (float *)ws_base(workspace);
  const int groups = s->B < PW_GROUPS ? s->B : PW_GROUPS;
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; g++) {
    float *part = ws + g * slot, *t = part + nw;
    const int b0 = (int)((long)s->B * g / groups), b1 = (int)((long)s->B * (g + 1) / groups);
    for (int b = b0; b < b1; b++) {
      const float *d = dout + (size_t)b * OC * P, *x = inp + (size_t)b * C * P;
      const float beta = b == b0 ? 0.0f : 1.0f;
      if (swap) {
        transpose(t, d, OC, P); // (P, OC)
        cpu_sgemm('N', 'N', C, OC, P, 1.0f, x, P, t, OC, beta, part, OC);
      } else {
        transpose(t, x, C, P); // (P, C)
        cpu_sgemm('N', 'N', OC, C, P, 1.0f, d, P, t, C, beta, part, C);
      }
    }
  }
#pragma omp parallel for schedule(static) if (nw * groups >= CPU_PAR_MIN)
  for (int oc = 0; oc < OC; oc++) {
    for (int c = 0; c < C; c++) {
      const size_t i = swap ? (size_t)c * OC + oc : (size_t)oc * C + c;
      float sum = ws[i];
      for (int g = 1; g < groups; g++) sum += ws[g * slot + i];
      dweight[(size_t)oc * C + c] += sum;
    }
  }
}

// ====================================================================== the ops

// Zeroed bias for a forward without one: the last OC floats of the workspace.
static size_t bias_slot(const a3_conv2d_shape *s) { return align64((size_t)s->OC * sizeof(float)); }

size_t cpu_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s) {
  (void)be;
  pthread_once(&atexit_once, register_atexit);
  pthread_once(&conv_once, conv_init);
  if (use_direct(s)) return 0;
  if (use_pointwise(s)) return pointwise_workspace_size(s);
  size_t ws = im2col_workspace_size(s);
  const int nb = chunk_images(s);
  const int sizes[2] = {nb, s->B % nb};
  for (int i = 0; i < 2; i++) {
    if (!sizes[i]) continue;
    const conv_prims *e = get_prims(s, sizes[i]);
    if (!e) continue;
    const size_t need = (e->ws_fwd > e->ws_bwd ? e->ws_fwd : e->ws_bwd) + bias_slot(s) + 64;
    if (need > ws) ws = need;
  }
  return ws;
}

void cpu_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s,
                        a3_act *out_act,       // (B, OC, OH, OW)
                        const a3_act *inp_act, // (B, C, H, W)
                        const float *weight,   // (OC, C, KH, KW)
                        const float *bias,     // (OC) or NULL
                        void *workspace) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  pthread_once(&atexit_once, register_atexit);
  pthread_once(&conv_once, conv_init);
  if (use_direct(s)) {
    direct_forward(s, out, inp, weight, bias);
    return;
  }
  if (use_pointwise(s)) {
    pointwise_forward(s, out, inp, weight, bias);
    return;
  }
  const int nb = chunk_images(s);
  const size_t in_img = (size_t)s->C * s->H * s->W;
  const size_t out_img = (size_t)s->OC * a3_conv2d_out_h(s) * a3_conv2d_out_w(s);
  int done = 0; // images done by oneDNN
  const conv_prims *e = get_prims(s, nb);
  if (e) {
    const conv_prims *last = s->B % nb ? get_prims(s, s->B % nb) : e;
    float *zero_bias = NULL;
    if (!bias && last) {
      const size_t ws_main = e->ws_fwd > last->ws_fwd ? e->ws_fwd : last->ws_fwd;
      zero_bias = (float *)(ws_base(workspace) + ws_main);
      memset(zero_bias, 0, (size_t)s->OC * sizeof(float));
    }
    while (last && done < s->B) {
      const conv_prims *c = s->B - done >= nb ? e : last;
      // The blocked weights (first in the workspace) stay from chunk to chunk
      // when the chunks' weight layouts are the same.
      const int ready = done > 0 && dnnl_memory_desc_equal(&c->f_w, &e->f_w);
      if (!dnnl_forward_chunk(c, out + done * out_img, inp + done * in_img, weight,
                              bias ? bias : zero_bias, ws_base(workspace), ready))
        break;
      done += c->s.B;
    }
  }
  if (done < s->B) { // the rest (all, normally none) by im2col
    a3_conv2d_shape rest = *s;
    rest.B = s->B - done;
    im2col_forward(&rest, out + done * out_img, inp + done * in_img, weight, bias, workspace);
  }
}

// The sum of one plane (<= a few thousand values) in float, vectorised (a
// fixed lane order: the same result on every call).
CPU_CLONES static float plane_sum(const float *d, int P) {
  float part = 0.0f;
#pragma omp simd reduction(+ : part)
  for (int p = 0; p < P; p++) part += d[p];
  return part;
}

// dbias (OC) += sums of dout (B, OC, P) over (b, p): planes in float, those in double.
static void bias_grad(float *dbias, const float *dout, int B, int OC, int P) {
#pragma omp parallel for schedule(static) if ((size_t)B * OC * P >= CPU_PAR_MIN)
  for (int oc = 0; oc < OC; oc++) {
    double sum = 0.0;
    for (int b = 0; b < B; b++) sum += plane_sum(dout + ((size_t)b * OC + oc) * P, P);
    dbias[oc] += (float)sum;
  }
}

void cpu_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s,
                         a3_act *dinp_act,       // (B, C, H, W) overwritten, or NULL
                         float *dweight,         // (OC, C, KH, KW) +=, or NULL
                         float *dbias,           // (OC) +=, or NULL
                         const a3_act *dout_act, // (B, OC, OH, OW)
                         const a3_act *inp_act,  // (B, C, H, W)
                         const float *weight,    // (OC, C, KH, KW)
                         void *workspace) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  pthread_once(&atexit_once, register_atexit);
  pthread_once(&conv_once, conv_init);
  const int P = a3_conv2d_out_h(s) * a3_conv2d_out_w(s);
  if (dbias) bias_grad(dbias, dout, s->B, s->OC, P);
  if (!dinp && !dweight) return;
  if (use_direct(s)) {
    direct_backward(s, dinp, dweight, dout, inp, weight);
    return;
  }
  if (use_pointwise(s)) {
    pointwise_backward(s, dinp, dweight, dout, inp, weight, workspace);
    return;
  }
  const int nb = chunk_images(s);
  const size_t in_img = (size_t)s->C * s->H * s->W, out_img = (size_t)s->OC * P;
  int done = 0;
  const conv_prims *e = get_prims(s, nb);
  const conv_prims *last = e && s->B % nb ? get_prims(s, s->B % nb) : e;
  while (e && last && done < s->B) {
    const conv_prims *c = s->B - done >= nb ? e : last;
    const int ready = done > 0 && dnnl_memory_desc_equal(&c->d_w, &e->d_w);
    if (!dnnl_backward_chunk(c, dinp ? dinp + done * in_img : NULL, dweight, dout + done * out_img,
                             inp + done * in_img, weight, ws_base(workspace), ready))
      break;
    done += c->s.B;
  }
  if (done < s->B) {
    a3_conv2d_shape rest = *s;
    rest.B = s->B - done;
    im2col_backward(&rest, dinp ? dinp + done * in_img : NULL, dweight, dout + done * out_img,
                    inp + done * in_img, weight, workspace);
  }
}
