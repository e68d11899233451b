// safetensors: write -> read round trips (bitwise), the writer's exact
// layout, F16/BF16/F64 conversion against independent oracles, read errors,
// a sparse 5 GB file read by offset; a3fta info's summary.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/safetensors.h"
#include "st_test_util.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dir;

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Equal bit patterns, or both NaN (a NaN's payload is not compared).
static int same_float(float a, float b) {
  return (isnan(a) && isnan(b)) || bits_of(a) == bits_of(b);
}

// ---------------------------------------------------------------- round trip
static void fill(float *x, size_t n, uint64_t stream) {
  for (size_t i = 0; i < n; i++) x[i] = float_of((uint32_t)a3_rng_u64(7, stream, i));
}

static void test_round_trip(void) {
  const char *path = io_path(dir, "round.safetensors");
  float w[6], b[5], s[1];
  fill(w, 6, 100);
  fill(b, 5, 101);
  w[0] = INFINITY, w[1] = -0.0f, w[2] = float_of(1), w[3] = NAN; // special values survive
  s[0] = 3.5f;
  const int64_t sw[2] = {3, 2}, sb[1] = {5}, se[2] = {0, 4};
  const a3_st_f32_tensor t[4] = {
      {"z.weight", 2, sw, w}, {"a.bias", 1, sb, b}, {"scalar", 0, NULL, s}, {"empty", 2, se, NULL}};
  const a3_st_metadata meta[2] = {{"note", "quote \" backslash \\ tab \t caf\xc3\xa9"},
                                  {"format", "pt"}};
  CHECK_STATUS(a3_safetensors_write_f32(path, t, 4, meta, 2), A3_OK, NULL);
  CHECK(!io_exists(io_path(dir, "round.safetensors.tmp")));

  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(path, &st), A3_OK, NULL);
  if (!st) return;
  CHECK(a3_safetensors_count(st) == 4);
  const char *order[4] = {"a.bias", "empty", "scalar", "z.weight"};
  for (int i = 0; i < 4 && i < a3_safetensors_count(st); i++)
    CHECK(!strcmp(a3_safetensors_tensor(st, i)->name, order[i]));
  const a3_st_tensor *tw = a3_safetensors_find(st, "z.weight");
  CHECK(tw && tw->dtype == A3_ST_F32 && tw->ndim == 2 && tw->shape[0] == 3 && tw->shape[1] == 2);
  CHECK(tw && tw->numel == 6);
  CHECK(a3_safetensors_find(st, "a.bias")->begin == 0); // data in name order
  CHECK(a3_safetensors_find(st, "scalar")->ndim == 0 &&
        a3_safetensors_find(st, "scalar")->numel == 1);
  CHECK(a3_safetensors_find(st, "empty")->numel == 0);
  CHECK(a3_safetensors_find(st, "nope") == NULL);

  float rw[6], rb[5], rs[1];
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "z.weight", rw, 6), A3_OK, NULL);
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "a.bias", rb, 5), A3_OK, NULL);
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "scalar", rs, 1), A3_OK, NULL);
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "empty", NULL, 0), A3_OK, NULL);
  CHECK(!memcmp(rw, w, sizeof w) && !memcmp(rb, b, sizeof b) && rs[0] == 3.5f);

  CHECK(a3_safetensors_metadata_count(st) == 2);
  CHECK(!strcmp(a3_safetensors_metadata(st, 0)->key, "format")); // sorted by key
  CHECK(!strcmp(a3_safetensors_metadata_get(st, "note"), meta[0].value));
  CHECK(a3_safetensors_metadata_get(st, "absent") == NULL);

  // Reading errors: wrong element count, missing name.
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "z.weight", rw, 5), A3_ERR_INPUT,
               "tensor 'z.weight': shape [3, 2] holds 6 elements but a3fta expects 5");
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "nope", rw, 6), A3_ERR_INPUT,
               "no tensor 'nope'");
  a3_safetensors_close(st);
}

// The exact bytes of a tiny file, as the reference implementation writes it.
static void test_exact_layout(void) {
  const char *path = io_path(dir, "exact.safetensors");
  const float x[2] = {1.0f, -2.0f};
  const int64_t shape[1] = {2};
  const a3_st_f32_tensor t = {"x", 1, shape, x};
  CHECK_STATUS(a3_safetensors_write_f32(path, &t, 1, NULL, 0), A3_OK, NULL);
  const char json[] = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  unsigned char want[8 + 56 + 8] = {56};
  memcpy(want + 8, json, sizeof json - 1);
  memset(want + 8 + sizeof json - 1, ' ', 56 - (sizeof json - 1)); // 52 -> 56: pad with spaces
  memcpy(want + 64, "\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);        // 1.0f, -2.0f little-endian
  char *got = NULL;
  size_t len = 0;
  CHECK_STATUS(a3_read_file(path, 1 << 20, &got, &len), A3_OK, NULL);
  CHECK_MSG(got && len == sizeof want && !memcmp(got, want, sizeof want), "len %zu", len);
  free(got);

  // Overwriting replaces the file; an empty set is "{}" padded to 8.
  CHECK_STATUS(a3_safetensors_write_f32(path, NULL, 0, NULL, 0), A3_OK, NULL);
  CHECK_STATUS(a3_read_file(path, 1 << 20, &got, &len), A3_OK, NULL);
  CHECK(got && len == 16 && got[0] == 8 && !memcmp(got + 8, "{}      ", 8));
  free(got);
  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(path, &st), A3_OK, NULL);
  CHECK(st && a3_safetensors_count(st) == 0 && a3_safetensors_metadata_count(st) == 0);
  a3_safetensors_close(st);
}

static void test_write_errors(void) {
  const char *path = io_path(dir, "bad.safetensors");
  const float x[2] = {1, 2};
  const int64_t shape[1] = {2}, neg[1] = {-1};
  const a3_st_f32_tensor dup[2] = {{"a", 1, shape, x}, {"a", 1, shape, x}};
  CHECK_STATUS(a3_safetensors_write_f32(path, dup, 2, NULL, 0), A3_ERR_INTERNAL, "given twice");
  const a3_st_f32_tensor reserved = {"__metadata__", 1, shape, x};
  CHECK_STATUS(a3_safetensors_write_f32(path, &reserved, 1, NULL, 0), A3_ERR_INTERNAL, "reserved");
  const a3_st_f32_tensor bad_utf8 = {"a\xff", 1, shape, x};
  CHECK_STATUS(a3_safetensors_write_f32(path, &bad_utf8, 1, NULL, 0), A3_ERR_INTERNAL, "UTF-8");
  const a3_st_f32_tensor bad_shape = {"a", 1, neg, x};
  CHECK_STATUS(a3_safetensors_write_f32(path, &bad_shape, 1, NULL, 0), A3_ERR_INTERNAL, "shape");
  const a3_st_metadata m[2] = {{"k", "1"}, {"k", "2"}};
  CHECK_STATUS(a3_safetensors_write_f32(path, NULL, 0, m, 2), A3_ERR_INTERNAL, "given twice");
  CHECK(!io_exists(path));
  const a3_st_f32_tensor ok = {"a", 1, shape, x};
  CHECK_STATUS(a3_safetensors_write_f32(io_path(dir, "no/such/dir/x.safetensors"), &ok, 1, NULL, 0),
               A3_ERR_IO, "cannot create");
}

// ---------------------------------------------------------------- conversion
// Independent oracles: the value each 16-bit pattern stands for, by the definitions.
static float f16_oracle(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
  double v;
  if (exp == 31)
    v = man ? NAN : INFINITY;
  else if (exp == 0)
    v = ldexp(man, -24);
  else
    v = ldexp(1024 + man, exp - 25);
  return (float)(sign ? -v : v);
}

static float bf16_oracle(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 7) & 255, man = h & 127;
  double v;
  if (exp == 255)
    v = man ? NAN : INFINITY;
  else if (exp == 0)
    v = ldexp(man, -133);
  else
    v = ldexp(128 + man, exp - 134);
  return (float)(sign ? -v : v);
}

// Every 16-bit pattern, 24 times over (1.5M elements, so the 1 MiB staging
// buffer is refilled several times and its boundaries fall mid-tensor).
static void check_all_halfs(const char *dtype, float (*oracle)(uint16_t)) {
  enum { REPEAT = 24, N = 65536 * REPEAT };
  unsigned char *data = malloc(2 * (size_t)N);
  float *got = malloc(sizeof *got * (size_t)N);
  if (!data || !got) abort();
  for (size_t i = 0; i < N; i++)
    data[2 * i] = (unsigned char)i, data[2 * i + 1] = (unsigned char)(i >> 8);
  char header[160];
  snprintf(header, sizeof header,
           "{\"h\":{\"dtype\":\"%s\",\"shape\":[%d,65536],\"data_offsets\":[0,%d]}}", dtype, REPEAT,
           2 * N);
  const char *path = io_path(dir, "halfs.safetensors");
  CHECK(st_write_header(path, header, data, 2 * (size_t)N) == 0);
  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(path, &st), A3_OK, NULL);
  if (st) CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "h", got, N), A3_OK, NULL);
  int bad = 0;
  for (size_t i = 0; st && i < N; i++)
    if (!same_float(got[i], oracle((uint16_t)i)) && bad++ < 5)
      fprintf(stderr, "%s 0x%04zx: got %a, want %a\n", dtype, i & 0xFFFF, got[i],
              oracle((uint16_t)i));
  CHECK_MSG(bad == 0, "%s: %d mismatches", dtype, bad);
  a3_safetensors_close(st);
  free(data);
  free(got);
}

// Chosen values with their float32 bit patterns written out.
static void test_chosen_values(void) {
  static const uint16_t f16[] = {0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0001,
                                 0x03FF, 0x0400, 0x3555, 0x7C00, 0xFC00};
  static const uint32_t f16_want[] = {0x00000000, 0x80000000, 0x3F800000, 0xC0000000,
                                      0x477FE000, 0x33800000, 0x387FC000, 0x38800000,
                                      0x3EAAA000, 0x7F800000, 0xFF800000};
  static const double f64[] = {1.0, -0.1, 1e-40, 3.4028234663852886e38, 0.1 + 0.2, 0x1p-149};
  static const uint32_t f64_want[] = {0x3F800000, 0xBDCCCCCD, 0x000116C2,
                                      0x7F7FFFFF, 0x3E99999A, 0x00000001};
  unsigned char data[2 * 11 + 8 * 6];
  for (int i = 0; i < 11; i++)
    data[2 * i] = f16[i] & 0xFF, data[2 * i + 1] = (unsigned char)(f16[i] >> 8);
  for (int i = 0; i < 6; i++) {
    uint64_t u;
    memcpy(&u, &f64[i], 8);
    for (int k = 0; k < 8; k++) data[22 + 8 * i + k] = (unsigned char)(u >> (8 * k));
  }
  const char *path = io_path(dir, "chosen.safetensors");
  CHECK(st_write_header(path,
                        "{\"a\":{\"dtype\":\"F16\",\"shape\":[11],\"data_offsets\":[0,22]},"
                        "\"b\":{\"dtype\":\"F64\",\"shape\":[2,3],\"data_offsets\":[22,70]}}",
                        data, sizeof data) == 0);
  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(path, &st), A3_OK, NULL);
  if (!st) return;
  float a[11], b[6];
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "a", a, 11), A3_OK, NULL);
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "b", b, 6), A3_OK, NULL);
  for (int i = 0; i < 11; i++)
    CHECK_MSG(bits_of(a[i]) == f16_want[i], "F16 %d: %08x", i, bits_of(a[i]));
  for (int i = 0; i < 6; i++)
    CHECK_MSG(bits_of(b[i]) == f64_want[i], "F64 %d: %08x", i, bits_of(b[i]));
  a3_safetensors_close(st);
}

// F64 beyond float32's range, and dtypes that are not floats.
static void test_unreadable(void) {
  unsigned char data[16 + 8] = {0};
  const double big = 1e300;
  memcpy(data, &big, 8); // element 1 stays 0.0
  const char *path = io_path(dir, "unreadable.safetensors");
  CHECK(st_write_header(path,
                        "{\"big\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                        "\"ints\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[16,24]}}",
                        data, sizeof data) == 0);
  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(path, &st), A3_OK, NULL);
  if (!st) return;
  float out[2];
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "big", out, 2), A3_ERR_INPUT,
               "element 0 = 1e+300 (F64) is outside float32's range");
  CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "ints", out, 1), A3_ERR_INPUT,
               "dtype I64 cannot be read as float32");
  CHECK(a3_safetensors_find(st, "ints")->dtype == A3_ST_I64);
  a3_safetensors_close(st);
}

// A 5 GB file, sparse on disk: opening reads only the header, and a tensor
// past the 4 GiB mark is read by its 64-bit offset.
static void test_sparse_5gb(void) {
  const char *path = io_path(dir, "sparse.safetensors");
  const char header[] = "{\"big\":{\"dtype\":\"U8\",\"shape\":[5000000000],\"data_offsets\":[0,"
                        "5000000000]},\"tail\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":"
                        "[5000000000,5000000008]}}";
  unsigned char head[8 + sizeof header - 1];
  for (int i = 0; i < 8; i++) head[i] = (unsigned char)((sizeof header - 1) >> (8 * i));
  memcpy(head + 8, header, sizeof header - 1);
  const float tail[2] = {1.5f, -3.0f};
  const off_t tail_at = (off_t)sizeof head + 5000000000;
  const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int ok = fd >= 0 && pwrite(fd, head, sizeof head, 0) == (ssize_t)sizeof head &&
                 pwrite(fd, tail, sizeof tail, tail_at) == (ssize_t)sizeof tail;
  if (fd >= 0) close(fd);
  if (!ok) { // a file system without sparse files or large offsets: nothing to test here
    fprintf(stderr, "test_sparse_5gb: skipped, cannot write %s\n", path);
    remove(path);
    return;
  }
  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(path, &st), A3_OK, NULL);
  float got[2] = {0, 0};
  if (st) CHECK_STATUS(a3_safetensors_read_f32_by_name(st, "tail", got, 2), A3_OK, NULL);
  CHECK(got[0] == 1.5f && got[1] == -3.0f);
  if (st) CHECK(a3_safetensors_find(st, "big")->numel == 5000000000);
  a3_safetensors_close(st);
  remove(path);
}

static void test_utf8(void) {
  CHECK(a3_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, NULL));
  size_t at = 99;
  CHECK(!a3_utf8_valid("ab\xc0\xaf", 4, &at) && at == 2);       // overlong '/'
  CHECK(!a3_utf8_valid("\xed\xa0\x80", 3, &at) && at == 0);     // surrogate U+D800
  CHECK(!a3_utf8_valid("\xf4\x90\x80\x80", 4, &at) && at == 0); // past U+10FFFF
  CHECK(!a3_utf8_valid("x\xe2\x82", 3, &at) && at == 1);        // cut short
  CHECK(!a3_utf8_valid("\x80", 1, &at) && at == 0);             // stray continuation
  CHECK(a3_utf8_valid("", 0, NULL));
}

// a3fta info's summary: metadata (a text of several lines by its size, a
// long one cut), tensors by dtype, a NaN found and named, integer tensors
// not scanned; --config's entry.
static void test_summary(void) {
  const int64_t sa[2] = {2, 3}, sb[1] = {4};
  const float a[6] = {0.5f, NAN, -1.0f, 2.0f, 0.0f, 1.0f}, b[4] = {1.0f, -7.5f, 3.0f, 0.25f};
  const a3_st_f32_tensor t[2] = {{"up.weight", 2, sa, a}, {"up.bias", 1, sb, b}};
  char long_value[201];
  memset(long_value, 'x', 200);
  long_value[200] = '\0';
  const a3_st_metadata meta[3] = {{"config", "model:\n  init: random\ntrain:\n  steps: 3\n"},
                                  {"long", long_value},
                                  {"strategy", "a3fta"}};
  const char *path = io_path(dir, "summary.safetensors");
  CHECK(a3_safetensors_write_f32(path, t, 2, meta, 3) == A3_OK);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  CHECK(f && a3_safetensors_print_summary(path, true, f) == A3_OK);
  if (f) fclose(f);
  const char *want[] = {"config: 4 lines",
                        "long: xxxxxxxx",
                        "... (200 characters)",
                        "strategy: a3fta",
                        "tensors      2, 10 values: 2 F32",
                        "up.bias",
                        "F32   (4)",
                        "up.weight",
                        "F32   (2, 3)",
                        "largest |value| 7.5; NOT all finite: 1 NaN or infinite values in 1 "
                        "tensors (first: up.weight)"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    CHECK_MSG(text && st_has(text, want[i]), "no '%s' in:\n%s", want[i], text);
  free(text);
  f = open_memstream(&text, &len);
  CHECK(f && a3_safetensors_print_config(path, f) == A3_OK);
  if (f) fclose(f);
  CHECK(text && !strcmp(text, meta[0].value));
  free(text);
  // An integer tensor is not scanned; a file without a config says so.
  const char *ipath = io_path(dir, "int.safetensors");
  const int32_t ints[2] = {7, -3};
  CHECK(st_write_header(ipath, "{\"i\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                        ints, sizeof ints) == 0);
  f = open_memstream(&text, &len);
  CHECK(f && a3_safetensors_print_summary(ipath, false, f) == A3_OK);
  if (f) fclose(f);
  CHECK_MSG(text && st_has(text, "all finite (1 integer tensors not scanned)") &&
                st_has(text, "1 I32"),
            "%s", text);
  free(text);
  f = open_memstream(&text, &len);
  CHECK(f && a3_safetensors_print_config(ipath, f) == A3_ERR_INPUT);
  if (f) fclose(f);
  free(text);
  CHECK(st_has(a3_error_message(), "no 'config' in its metadata"));
}

int main(void) {
  dir = io_make_temp_dir("safetensors");
  if (!dir) return 1;
  test_round_trip();
  test_exact_layout();
  test_write_errors();
  check_all_halfs("F16", f16_oracle);
  check_all_halfs("BF16", bf16_oracle);
  test_chosen_values();
  test_unreadable();
  test_sparse_5gb();
  test_utf8();
  test_summary();
  io_remove_tree(dir);
  free(dir);
  return TEST_DONE("test_safetensors");
}
