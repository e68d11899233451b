// libpng decoding. libpng reports errors by calling our error function,
// which must not return: it longjmps back into the small *_protected
// functions below, which hold no state that changes after their setjmp.
#include "io/png_load.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Guards against decompression bombs: 64 Mpixel is far above any image a
// diffusion model here trains on, far below what would exhaust memory.
static const uint64_t max_pixels = (uint64_t)1 << 26;

typedef struct {
  FILE *fp;
  png_structp png;
  png_infop info;
  jmp_buf jmp;
  char message[256];
} png_reader;

static void on_error(png_structp png, png_const_charp msg) {
  png_reader *r = png_get_error_ptr(png);
  snprintf(r->message, sizeof r->message, "%s", msg);
  longjmp(r->jmp, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  a3_debug("libpng warning: %s", msg); // e.g. odd colour profiles: harmless for us
}

static a3_status corrupt(const png_reader *r, const char *path) {
  return A3_FAIL(A3_ERR_INPUT,
                 "%s: corrupt or truncated PNG (libpng: %s); re-export the image or remove it",
                 path, r->message);
}

static a3_status check_signature(FILE *fp, const char *path) {
  png_byte sig[8];
  const size_t got = fread(sig, 1, sizeof sig, fp);
  if (got == sizeof sig && png_sig_cmp(sig, 0, sizeof sig) == 0) return A3_OK;
  if (ferror(fp)) return A3_FAIL(A3_ERR_IO, "%s: read failed: %s", path, strerror(errno));
  return A3_FAIL(A3_ERR_INPUT,
                 "%s: not a PNG file (%s); 'a3fta import images' reads PNG files only: convert "
                 "it to PNG or move it out of the class folder",
                 path, got == 0 ? "it is empty" : "its first bytes are not the PNG signature");
}

static void reader_close(png_reader *r) {
  if (r->png) png_destroy_read_struct(&r->png, r->info ? &r->info : NULL, NULL);
  if (r->fp) fclose(r->fp);
  r->png = NULL;
  r->info = NULL;
  r->fp = NULL;
}

static int read_info_protected(png_reader *r) {
  if (setjmp(r->jmp)) return -1;
  png_init_io(r->png, r->fp);
  png_set_sig_bytes(r->png, 8);
  png_read_info(r->png, r->info);
  return 0;
}

// Opens `path`, checks the signature and reads the header chunks.
static a3_status reader_open(png_reader *r, const char *path) {
  memset(r, 0, sizeof *r);
  r->fp = fopen(path, "rb");
  if (!r->fp) return A3_FAIL(A3_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  a3_status s = check_signature(r->fp, path);
  if (s == A3_OK) {
    r->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, on_error, on_warning);
    r->info = r->png ? png_create_info_struct(r->png) : NULL;
    if (!r->info) s = A3_FAIL(A3_ERR_NOMEM, "%s: cannot allocate libpng's structures", path);
  }
  if (s == A3_OK && read_info_protected(r) != 0) s = corrupt(r, path);
  const uint64_t pixels = s == A3_OK ? (uint64_t)png_get_image_width(r->png, r->info) *
                                           png_get_image_height(r->png, r->info)
                                     : 0;
  if (s == A3_OK && pixels > max_pixels)
    s = A3_FAIL(A3_ERR_INPUT, "%s: %ux%u pixels, more than the limit of %llu; scale it down first",
                path, png_get_image_width(r->png, r->info), png_get_image_height(r->png, r->info),
                (unsigned long long)max_pixels);
  if (s != A3_OK) reader_close(r);
  return s;
}

a3_status a3_png_read_header(const char *path, a3_png_header *out) {
  png_reader r;
  A3_TRY(reader_open(&r, path));
  out->width = png_get_image_width(r.png, r.info);
  out->height = png_get_image_height(r.png, r.info);
  out->grey = !(png_get_color_type(r.png, r.info) & PNG_COLOR_MASK_COLOR);
  reader_close(&r);
  return A3_OK;
}

// Asks libpng for 8-bit RGBA whatever the file holds.
static int set_rgba_protected(png_reader *r) {
  if (setjmp(r->jmp)) return -1;
  png_set_expand(r->png); // palette -> RGB, grey < 8 bit -> 8 bit, tRNS -> alpha
  png_set_scale_16(r->png);
  png_set_gray_to_rgb(r->png);
  png_set_filler(r->png, 0xff, PNG_FILLER_AFTER); // opaque alpha where there is none
  png_set_interlace_handling(r->png);
  png_read_update_info(r->png, r->info);
  return 0;
}

static int read_rows_protected(png_reader *r, png_bytepp rows) {
  if (setjmp(r->jmp)) return -1;
  png_read_image(r->png, rows);
  png_read_end(r->png, NULL); // reaches IEND: catches files cut after the pixels
  return 0;
}

// Decodes into rgba (H, W, 4) uint8.
static a3_status decode_rgba(png_reader *r, const char *path, uint32_t h, uint32_t w,
                             uint8_t *rgba) {
  if (set_rgba_protected(r) != 0) return corrupt(r, path);
  if (png_get_rowbytes(r->png, r->info) != (size_t)w * 4)
    return A3_FAIL(A3_ERR_INTERNAL, "%s: libpng gave %zu bytes per row, expected %zu", path,
                   (size_t)png_get_rowbytes(r->png, r->info), (size_t)w * 4);
  png_bytep *rows = NULL;
  A3_TRY(A3_ALLOC(rows, h));
  for (uint32_t y = 0; y < h; y++) rows[y] = rgba + (size_t)y * w * 4;
  const int rc = read_rows_protected(r, rows);
  free(rows);
  if (rc != 0) return corrupt(r, path);
  return A3_OK;
}

static uint8_t over_black(uint8_t v, uint8_t alpha) {
  return (uint8_t)(((unsigned)v * alpha + 127) / 255);
}

// rgba (H, W, 4) -> img->pixels (C, H, W).
static void rgba_to_planar(const uint8_t *rgba, a3_image *img) {
  const size_t plane = (size_t)img->height * (size_t)img->width;
  for (size_t p = 0; p < plane; p++) {
    const uint8_t *px = rgba + 4 * p;
    const uint8_t r = over_black(px[0], px[3]), g = over_black(px[1], px[3]),
                  b = over_black(px[2], px[3]);
    if (img->channels == 1) {
      img->pixels[p] = (uint8_t)((299u * r + 587u * g + 114u * b + 500u) / 1000u);
    } else {
      img->pixels[p] = r;
      img->pixels[plane + p] = g;
      img->pixels[2 * plane + p] = b;
    }
  }
}

a3_status a3_png_read(const char *path, int channels, a3_image *out) {
  memset(out, 0, sizeof *out);
  if (channels != 1 && channels != 3)
    return A3_FAIL(A3_ERR_INTERNAL, "a3_png_read: channels must be 1 or 3, got %d", channels);
  png_reader r;
  A3_TRY(reader_open(&r, path));
  const uint32_t h = png_get_image_height(r.png, r.info), w = png_get_image_width(r.png, r.info);
  uint8_t *rgba = NULL;
  a3_status s = a3_alloc((void **)&rgba, (size_t)h * w, 4);
  if (s == A3_OK) s = decode_rgba(&r, path, h, w, rgba);
  reader_close(&r);
  out->channels = channels;
  out->height = (int)h;
  out->width = (int)w;
  if (s == A3_OK) s = a3_alloc((void **)&out->pixels, (size_t)channels * h * w, 1);
  if (s == A3_OK) rgba_to_planar(rgba, out);
  free(rgba);
  if (s != A3_OK) a3_image_free(out);
  A3_TRY(s);
  return A3_OK;
}

void a3_image_free(a3_image *img) {
  if (!img) return;
  free(img->pixels);
  img->pixels = NULL;
}
