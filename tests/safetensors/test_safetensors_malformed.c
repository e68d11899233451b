// safetensors: a table of malformed files, each refused with A3_ERR_INPUT and
// a message that says what is wrong, and a table of unusual but valid ones.
//
// Decision (same as the reference implementation): the tensors must tile the
// data buffer exactly, so a gap, an overlap, or trailing bytes after the last
// tensor are errors.
#include "a3fta/safetensors.h"
#include "st_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;

#define T32(name, shape, b, e)                                                                     \
  "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

typedef struct {
  const char *what;
  const char *header; // JSON text (may hold any bytes; NUL-free)
  size_t data_len;    // bytes after the header
  int64_t n_field;    // header length field; -1 = strlen(header)
  const char *expect; // substring of the message
} bad_case;

static const bad_case bad_cases[] = {
    {"N huge", "{}", 0, INT64_MAX, "exceeds the limit of 16000000 bytes"},
    {"N just over the limit", "{}", 0, 100000001, "exceeds the limit"},
    {"N past the end", "{}", 4, 100, "header length 100 exceeds the 6 bytes that follow it"},
    {"N zero", "{}", 2, 0, "does not start with a JSON object ('{', it is empty)"},
    {"invalid JSON", "{\"a\": {\"dtype\": \"F32\", ", 0, -1, "is not valid JSON"},
    {"lone surrogate escape", "{\"\\ud800\":{}}", 0, -1, "is not valid JSON"},
    {"header not UTF-8", "{\"a\xff\":{}}", 0, -1, "not valid UTF-8 (byte 3 of the header"},
    {"overlong UTF-8", "{\"\xc0\xaf\":{}}", 0, -1, "not valid UTF-8"},
    {"top level is a list", "[1, 2]", 0, -1, "does not start with a JSON object"},
    {"byte order mark", "\xef\xbb\xbf{}", 0, -1, "does not start with a JSON object"},
    {"text after the object", "{} x", 0, -1, "'x' after the JSON object"},
    {"second object", "{}{}", 0, -1, "after the JSON object"},
    {"NUL escape in a name", "{\"a\\u0000b\":{}}", 0, -1, "\\u0000"},
    {"raw control character", "{\"a\tb\":{}}", 0, -1, "raw control character 0x09"},
    {"entry not an object", "{\"a\":5}", 0, -1, "tensor 'a': the entry is a number, not an object"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
     "tensor 'a': missing field 'dtype'"},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, -1,
     "missing field 'shape'"},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, -1,
     "missing field 'data_offsets'"},
    {"extra field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4,
     -1, "unknown field 'x'"},
    {"field twice",
     "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
     "field 'dtype' appears twice"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
     "tensor 'a': unknown dtype \"F17\""},
    {"dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
     "dtype is a number"},
    {"shape not a list", "{" T32("a", "\"1\"", 0, 4) "}", 4, -1, "shape is a string"},
    {"negative dim", "{" T32("a", "[-1,2]", 0, 4) "}", 4, -1, "shape[0] = -1 is negative"},
    {"minus zero dim", "{" T32("a", "[-0]", 0, 0) "}", 0, -1, "shape[0] = -0 is negative"},
    {"float dim", "{" T32("a", "[2.0]", 0, 8) "}", 8, -1,
     "tensor 'a': shape holds 2.0, which is not an integer"},
    {"exponent dim", "{" T32("a", "[1e2]", 0, 400) "}", 400, -1,
     "holds 1e2, which is not an integer"},
    {"huge dim", "{" T32("a", "[2199023255553]", 0, 4) "}", 4, -1,
     "shape[0] = 2199023255553 exceeds the limit of 1099511627776"},
    {"string dim", "{" T32("a", "[\"2\"]", 0, 8) "}", 8, -1,
     "shape[0] is a string, not an integer"},
    {"nine dims", "{" T32("a", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, -1,
     "shape has 9 dimensions; a3fta reads at most 8"},
    {"nested shape", "{" T32("a", "[[1]]", 0, 4) "}", 4, -1, "nests lists or objects deeper"},
    {"product overflow", "{" T32("a", "[1099511627776,1099511627776]", 0, 4) "}", 4, -1,
     "shape [1099511627776, 1099511627776] of F32 needs more than 2^64 bytes"},
    {"bytes overflow",
     "{\"a\":{\"dtype\":\"F64\",\"shape\":[1099511627776,2097152],\"data_offsets\":[0,8]}}", 8, -1,
     "of F64 needs more than 2^64 bytes"},
    {"offsets reversed", "{" T32("a", "[2]", 8, 0) "}", 8, -1,
     "data_offsets [8, 0) are reversed (begin > end)"},
    {"offsets past the end", "{" T32("a", "[4]", 0, 16) "}", 8, -1,
     "data_offsets [0, 16) reach past the end of the data buffer (8 bytes)"},
    {"size mismatch", "{" T32("down_blocks.0.resnets.0.conv1.weight", "[32,1,3,3]", 0, 1000) "}",
     1000, -1,
     "tensor 'down_blocks.0.resnets.0.conv1.weight': data_offsets [0, 1000) hold 1000 bytes but "
     "shape [32, 1, 3, 3] of F32 needs 1152"},
    {"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, -1,
     "data_offsets is a list of another length"},
    {"offsets not a list", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4, -1,
     "data_offsets is a number"},
    {"float offset", "{" T32("a", "[1]", 0, 4.0) "}", 4, -1, "data_offsets holds 4.0"},
    {"negative offset", "{" T32("a", "[0]", -8, 0) "}", 0, -1, "data_offsets[0] = -8 is negative"},
    {"huge offset", "{" T32("a", "[0]", 1152921504606846976, 1152921504606846976) "}", 0, -1,
     "data_offsets[0] = 1152921504606846976 exceeds the limit"},
    {"overlapping tensors", "{" T32("a", "[2]", 0, 8) "," T32("b", "[2]", 4, 12) "}", 12, -1,
     "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
    {"empty tensor inside another", "{" T32("a", "[2]", 0, 8) "," T32("e", "[0]", 4, 4) "}", 8, -1,
     "overlap"},
    {"gap between tensors", "{" T32("a", "[1]", 0, 4) "," T32("b", "[1]", 8, 12) "}", 12, -1,
     "bytes [4, 8) of the data buffer belong to no tensor (before 'b')"},
    {"gap at the start", "{" T32("a", "[1]", 4, 8) "}", 8, -1, "bytes [0, 4) of the data buffer"},
    {"trailing bytes", "{" T32("a", "[1]", 0, 4) "}", 8, -1,
     "the tensors end at byte 4 of the data buffer but the file holds 4 more bytes"},
    {"bytes but no tensors", "{}", 8, -1, "the tensors end at byte 0"},
    {"duplicate names", "{" T32("a", "[1]", 0, 4) "," T32("a", "[1]", 4, 8) "}", 8, -1,
     "tensor 'a' appears twice in the header"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, -1,
     "__metadata__ value of 'k' is a number, not a string"},
    {"metadata not an object", "{\"__metadata__\":[\"k\"]}", 0, -1,
     "__metadata__ is a list, not an object of strings"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, -1,
     "__metadata__ appears twice"},
    {"metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, -1,
     "__metadata__ key 'k' appears twice"},
};

// Valid files that exercise the edges of the rules.
static const struct {
  const char *what, *header;
  size_t data_len;
  int n_tensors;
} good_cases[] = {
    {"empty", "{}", 0, 0},
    {"padding and newlines", " \n{\"__metadata__\":{}}\n\t     ", 0, 0},
    {"scalar", "{" T32("s", "[]", 0, 4) "}", 4, 1},
    {"empty tensors share an offset",
     "{" T32("e1", "[0]", 0, 0) "," T32("e2", "[3,0]", 0, 0) "," T32("a", "[1]", 0, 4) "}", 4, 3},
    {"entries out of offset order", "{" T32("b", "[1]", 4, 8) "," T32("a", "[1]", 0, 4) "}", 8, 2},
    {"unicode name and escapes", "{" T32("caf\xc3\xa9\\u00e9\\n", "[1]", 0, 4) "}", 4, 1},
    {"metadata only", "{\"__metadata__\":{\"format\":\"pt\",\"k\":\"\"}}", 0, 0},
    {"zero dim with a huge one", "{" T32("z", "[0,1099511627776,1099511627776]", 0, 0) "}", 0, 1},
};

static void run_bad(const bad_case *c) {
  const char *path = io_path(dir, "bad.safetensors");
  const size_t len = strlen(c->header);
  const uint64_t n = c->n_field < 0 ? len : (uint64_t)c->n_field;
  CHECK(st_write_raw(path, n, c->header, len, NULL, c->data_len) == 0);
  a3_safetensors *st = (a3_safetensors *)&st; // must be reset to NULL on failure
  const a3_status s = a3_safetensors_open(path, &st);
  CHECK_MSG(st == NULL, "%s: handle not NULL", c->what);
  const char *msg = a3_error_message();
  CHECK_MSG(s == A3_ERR_INPUT && strstr(msg, c->expect) && strstr(msg, path),
            "%s: %s: %s\n  want: %s", c->what, a3_status_name(s), msg, c->expect);
  a3_error_clear();
}

// Files shorter than the 8-byte length field, which st_write_raw cannot make.
static void run_short_files(void) {
  const char *path = io_path(dir, "short.safetensors");
  for (size_t len = 0; len < 8; len += 5) {
    CHECK(io_write_file(path, "\x02\0\0\0\0", len) == 0);
    a3_safetensors *st = NULL;
    CHECK_STATUS(a3_safetensors_open(path, &st), A3_ERR_INPUT,
                 "fewer than the 8-byte header length");
  }
  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(dir, &st), A3_ERR_INPUT, "is not a regular file");
  CHECK_STATUS(a3_safetensors_open(io_path(dir, "absent"), &st), A3_ERR_IO, "cannot open");
}

static void run_good(int i) {
  const char *path = io_path(dir, "good.safetensors");
  CHECK(st_write_header(path, good_cases[i].header, NULL, good_cases[i].data_len) == 0);
  a3_safetensors *st = NULL;
  const a3_status s = a3_safetensors_open(path, &st);
  CHECK_MSG(s == A3_OK && a3_safetensors_count(st) == good_cases[i].n_tensors, "%s: %s",
            good_cases[i].what, a3_error_message());
  a3_error_clear();
  a3_safetensors_close(st);
}

int main(void) {
  dir = io_make_temp_dir("safetensors-bad");
  if (!dir) return 1;
  const int n_bad = (int)(sizeof bad_cases / sizeof bad_cases[0]);
  for (int i = 0; i < n_bad; i++) run_bad(&bad_cases[i]);
  run_short_files();
  const int n_good = (int)(sizeof good_cases / sizeof good_cases[0]);
  for (int i = 0; i < n_good; i++) run_good(i);
  fprintf(stderr, "%d malformed and %d valid files\n", n_bad + 2, n_good);
  io_remove_tree(dir);
  free(dir);
  return TEST_DONE("test_safetensors_malformed");
}
