// safetensors: deterministic mutation fuzzing. 5000 variants of a valid file
// (byte flips, JSON-ish byte substitutions, truncations, insertions, deletions,
// rewritten length fields), mostly in the header, each opened and every
// tensor read. Each must give A3_OK or A3_ERR_INPUT, never a crash; run under
// ASan/UBSan (A3FTA_SANITIZE=ON) to catch out-of-bounds accesses as well.
// For a longer local run: A3FTA_FUZZ_ITERATIONS=200000 A3FTA_FUZZ_SEED=2 test_safetensors_fuzz
#include "a3fta/safetensors.h"
#include "st_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ITERATIONS = 5000, STREAM = 7001 }; // STREAM: this test's own Philox stream
static uint64_t seed = 20240611;

static long env_or(const char *name, long fallback) {
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : fallback;
}

typedef struct {
  unsigned char *p;
  size_t len, cap;
} bytes;

static uint64_t rnd(uint64_t *counter, uint64_t n) {
  return a3_rng_below(seed, STREAM, (*counter)++, n);
}

// A valid file with every readable dtype, metadata, a scalar and an empty tensor.
static int make_base(const char *dir, bytes *out) {
  const char *path = io_path(dir, "base.safetensors");
  float w[2 * 3 * 3 * 3], b[2], s[1] = {0.5f};
  for (int i = 0; i < 54; i++) w[i] = (float)i / 7.0f;
  b[0] = -1.0f, b[1] = 2.0f;
  const int64_t sw[4] = {2, 3, 3, 3}, sb[1] = {2}, se[2] = {0, 3};
  const a3_st_f32_tensor t[4] = {{"down_blocks.0.resnets.0.conv1.weight", 4, sw, w},
                                 {"down_blocks.0.resnets.0.conv1.bias", 1, sb, b},
                                 {"mid_block.attentions.0.to_q.scale", 0, NULL, s},
                                 {"empty", 2, se, NULL}};
  const a3_st_metadata m[1] = {{"format", "pt"}};
  if (a3_safetensors_write_f32(path, t, 4, m, 1) != A3_OK) return -1;
  char *text = NULL;
  if (a3_read_file(path, 1 << 20, &text, &out->len) != A3_OK) return -1;
  out->p = (unsigned char *)text;
  return 0;
}

static void mutate(bytes *f, size_t header_end, uint64_t *c) {
  static const char tokens[] = "{}[]\":,-.0123456789eE \\u";
  const int kind = (int)rnd(c, 7);
  // Most mutations land in the header, where the parsing is.
  const size_t span = rnd(c, 10) < 8 ? header_end : f->len;
  const size_t at = span ? (size_t)rnd(c, span) : 0;
  if (kind == 0 && f->len) f->p[at % f->len] ^= (unsigned char)(1u << rnd(c, 8));
  if (kind == 1 && f->len) f->p[at % f->len] = (unsigned char)tokens[rnd(c, sizeof tokens - 1)];
  if (kind == 2 && f->len) f->p[at % f->len] = (unsigned char)rnd(c, 256);
  if (kind == 3) f->len = (size_t)rnd(c, f->len + 1); // truncate
  if (kind == 4 && f->len < f->cap) {                 // insert a byte
    const size_t i = at % (f->len + 1);
    memmove(f->p + i + 1, f->p + i, f->len - i);
    f->p[i] = (unsigned char)tokens[rnd(c, sizeof tokens - 1)];
    f->len++;
  }
  if (kind == 5 && f->len) { // delete a byte
    const size_t i = at % f->len;
    memmove(f->p + i, f->p + i + 1, f->len - i - 1);
    f->len--;
  }
  if (kind == 6 && f->len >= 8) { // a nearby or wild header length
    const uint64_t n =
        rnd(c, 2) ? (header_end - 8) + rnd(c, 17) - 8 : a3_rng_u64(seed, STREAM, (*c)++);
    for (int i = 0; i < 8; i++) f->p[i] = (unsigned char)(n >> (8 * i));
  }
}

// Opens the file and reads every tensor; returns the first non-OK status.
static a3_status open_and_read(const char *path, int *n_read) {
  a3_safetensors *st = NULL;
  a3_status s = a3_safetensors_open(path, &st);
  for (int i = 0; s == A3_OK && i < a3_safetensors_count(st); i++) {
    const a3_st_tensor *t = a3_safetensors_tensor(st, i);
    float *buf = malloc(sizeof(float) * (size_t)(t->numel > 0 ? t->numel : 1));
    if (!buf) abort(); // the header bounds numel by the file size (< 1 MB here)
    s = a3_safetensors_read_f32(st, t, buf, t->numel);
    if (s == A3_OK) ++*n_read;
    free(buf);
  }
  a3_safetensors_close(st);
  return s;
}

int main(void) {
  char *dir = io_make_temp_dir("safetensors-fuzz");
  bytes base = {0};
  if (!dir || make_base(dir, &base) != 0) return 1;
  const size_t header_end = 8 + (size_t)base.p[0] + ((size_t)base.p[1] << 8);
  bytes f = {malloc(base.len + 64), 0, base.len + 64};
  const char *path = io_path(dir, "mutant.safetensors");
  const int iterations = (int)env_or("A3FTA_FUZZ_ITERATIONS", ITERATIONS);
  seed = (uint64_t)env_or("A3FTA_FUZZ_SEED", (long)seed);
  uint64_t counter = 0;
  int ok = 0, input = 0, other = 0, tensors_read = 0;
  for (int it = 0; it < iterations; it++) {
    memcpy(f.p, base.p, base.len);
    f.len = base.len;
    const int n_mutations = 1 + (int)rnd(&counter, 3);
    for (int m = 0; m < n_mutations; m++) mutate(&f, header_end, &counter);
    // A new file each time: truncating one with unwritten data makes ext4
    // flush it to disk first (auto_da_alloc), 1000x slower than this.
    remove(path);
    CHECK(io_write_file(path, f.p, f.len) == 0);
    const a3_status s = open_and_read(path, &tensors_read);
    ok += s == A3_OK, input += s == A3_ERR_INPUT;
    if (s != A3_OK && s != A3_ERR_INPUT && other++ < 5)
      fprintf(stderr, "iteration %d: %s: %s\n", it, a3_status_name(s), a3_error_message());
    a3_error_clear();
  }
  fprintf(stderr,
          "%d mutants: %d opened and read, %d refused (A3_ERR_INPUT), %d other; %d tensors read\n",
          iterations, ok, input, other, tensors_read);
  CHECK(other == 0);
  CHECK(input > iterations / 2); // the mutations do break files...
  CHECK(ok > 50);                // ...but not all of them (data bytes, padding)
  free(f.p);
  free(base.p);
  io_remove_tree(dir);
  free(dir);
  return TEST_DONE("test_safetensors_fuzz");
}
