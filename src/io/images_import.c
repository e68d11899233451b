// A folder of PNGs, one subfolder per class -> an a3fta dataset file.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dataset.h"
#include "io/dataset_write.h"
#include "io/image_fit.h"
#include "io/png_load.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { BATCH_IMAGES = 256 }; // images decoded per HDF5 write

static const char layout_hint[] =
    "'a3fta import images DIR' expects DIR/<class name>/<image>.png: one subfolder per class";

typedef struct {
  char **items;
  int count;
} name_list;

typedef struct {
  char *path;
  int label;
  a3_png_header header;
} image_entry;

typedef struct {
  name_list classes;   // sorted subfolder names
  image_entry *images; // (n) class by class, sorted by file name within a class
  int64_t n;
} folder_scan;

static void names_free(name_list *l) {
  for (int i = 0; i < l->count; i++) free(l->items[i]);
  free(l->items);
  l->items = NULL;
  l->count = 0;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static a3_status path_join(const char *a, const char *b, char **out) {
  const size_t la = strlen(a), lb = strlen(b);
  A3_TRY(a3_alloc((void **)out, la + lb + 2, 1));
  memcpy(*out, a, la);
  (*out)[la] = '/';
  memcpy(*out + la + 1, b, lb);
  return A3_OK;
}

static a3_status names_push(name_list *l, const char *name) {
  char **grown = realloc(l->items, (size_t)(l->count + 1) * sizeof *grown);
  if (!grown) return A3_FAIL(A3_ERR_NOMEM, "cannot grow a list of %d names", l->count);
  l->items = grown;
  l->items[l->count] = NULL;
  A3_TRY(a3_alloc((void **)&l->items[l->count], strlen(name) + 1, 1));
  memcpy(l->items[l->count++], name, strlen(name));
  return A3_OK;
}

// Sorts the entries of `dir` into folders and files. Hidden entries (".x")
// are skipped: file managers and version control leave them everywhere.
static a3_status classify_entry(const char *dir, const char *name, name_list *dirs,
                                name_list *files) {
  char *path = NULL;
  A3_TRY(path_join(dir, name, &path));
  struct stat st;
  const int rc = stat(path, &st);
  const int err = errno;
  free(path);
  if (rc != 0) return A3_FAIL(A3_ERR_IO, "cannot stat %s/%s: %s", dir, name, strerror(err));
  if (S_ISDIR(st.st_mode)) A3_TRY(names_push(dirs, name));
  if (S_ISREG(st.st_mode)) A3_TRY(names_push(files, name));
  return A3_OK;
}

static a3_status list_dir(const char *dir, name_list *dirs, name_list *files) {
  DIR *d = opendir(dir);
  if (!d) return A3_FAIL(A3_ERR_IO, "cannot read folder %s: %s", dir, strerror(errno));
  a3_status s = A3_OK;
  for (struct dirent *e = readdir(d); e && s == A3_OK; e = readdir(d))
    if (e->d_name[0] != '.') s = classify_entry(dir, e->d_name, dirs, files);
  closedir(d);
  A3_TRY(s);
  // qsort(NULL, 0, ...) is undefined behaviour, and an empty list has a NULL array.
  if (dirs->count > 1) qsort(dirs->items, (size_t)dirs->count, sizeof *dirs->items, compare_names);
  if (files->count > 1)
    qsort(files->items, (size_t)files->count, sizeof *files->items, compare_names);
  return A3_OK;
}

static a3_status scan_top(const char *dir, name_list *classes) {
  name_list files = {0};
  a3_status s = list_dir(dir, classes, &files);
  if (s == A3_OK && classes->count == 0 && files.count == 0)
    s = A3_FAIL(A3_ERR_INPUT, "%s is an empty folder; %s", dir, layout_hint);
  else if (s == A3_OK && classes->count == 0)
    s = A3_FAIL(A3_ERR_INPUT, "%s has %d file(s) but no class subfolders (e.g. %s/%s); %s", dir,
                files.count, dir, files.items[0], layout_hint);
  else if (s == A3_OK && files.count > 0)
    a3_warn("ignoring %d file(s) directly in %s (e.g. %s): images belong in class subfolders",
            files.count, dir, files.items[0]);
  names_free(&files);
  return s;
}

static a3_status add_images(folder_scan *scan, const char *class_dir, int label,
                            const name_list *files) {
  image_entry *grown = realloc(scan->images, (size_t)(scan->n + files->count) * sizeof *grown);
  if (!grown) return A3_FAIL(A3_ERR_NOMEM, "cannot list %lld images", (long long)scan->n);
  scan->images = grown;
  for (int i = 0; i < files->count; i++) {
    image_entry *e = &scan->images[scan->n];
    memset(e, 0, sizeof *e);
    e->label = label;
    A3_TRY(path_join(class_dir, files->items[i], &e->path));
    scan->n++;
  }
  return A3_OK;
}

static a3_status scan_class(const char *dir, int label, folder_scan *scan) {
  name_list subdirs = {0}, files = {0};
  char *class_dir = NULL;
  a3_status s = path_join(dir, scan->classes.items[label], &class_dir);
  if (s == A3_OK) s = list_dir(class_dir, &subdirs, &files);
  if (s == A3_OK && subdirs.count > 0)
    s = A3_FAIL(A3_ERR_INPUT, "%s/%s is a folder inside class folder %s; %s (no deeper)", class_dir,
                subdirs.items[0], class_dir, layout_hint);
  else if (s == A3_OK && files.count == 0)
    s = A3_FAIL(A3_ERR_INPUT,
                "class folder %s has no images; add PNG files or remove the folder (every "
                "subfolder of %s is a class)",
                class_dir, dir);
  if (s == A3_OK) s = add_images(scan, class_dir, label, &files);
  free(class_dir);
  names_free(&subdirs);
  names_free(&files);
  return s;
}

static void scan_free(folder_scan *scan) {
  for (int64_t i = 0; i < scan->n; i++) free(scan->images[i].path);
  free(scan->images);
  names_free(&scan->classes);
}

static a3_status scan_folder(const char *dir, folder_scan *scan) {
  struct stat st;
  if (stat(dir, &st) != 0)
    return A3_FAIL(A3_ERR_INPUT, "image folder %s: %s; %s", dir, strerror(errno), layout_hint);
  if (!S_ISDIR(st.st_mode))
    return A3_FAIL(A3_ERR_INPUT, "%s is a file, not a folder; %s", dir, layout_hint);
  A3_TRY(scan_top(dir, &scan->classes));
  for (int c = 0; c < scan->classes.count; c++) A3_TRY(scan_class(dir, c, scan));
  for (int64_t i = 0; i < scan->n; i++)
    A3_TRY(a3_png_read_header(scan->images[i].path, &scan->images[i].header));
  return A3_OK;
}

// Without a target size every image must have the first image's size.
static a3_status check_same_size(const folder_scan *scan) {
  const image_entry *first = &scan->images[0];
  for (int64_t i = 1; i < scan->n; i++) {
    const image_entry *e = &scan->images[i];
    if (e->header.width != first->header.width || e->header.height != first->header.height)
      return A3_FAIL(A3_ERR_INPUT,
                     "images differ in size: %s is %ux%u (HxW) but %s is %ux%u; pass --size HxW "
                     "(with --fit pad or resize) to bring them to one size",
                     first->path, first->header.height, first->header.width, e->path,
                     e->header.height, e->header.width);
  }
  return A3_OK;
}

typedef struct {
  int channels, height, width;
  a3_fit fit;
  const char *split;
} import_plan;

static a3_status make_plan(const a3_image_import_options *opt, const folder_scan *scan,
                           import_plan *plan) {
  plan->fit = opt->height > 0 ? opt->fit : A3_FIT_NONE;
  plan->split = opt->split ? opt->split : "train";
  if (strcmp(plan->split, "train") && strcmp(plan->split, "test"))
    return A3_FAIL(A3_ERR_USAGE, "split '%s': expected train or test", plan->split);
  plan->height = opt->height > 0 ? opt->height : (int)scan->images[0].header.height;
  plan->width = opt->height > 0 ? opt->width : (int)scan->images[0].header.width;
  if (opt->height <= 0) A3_TRY(check_same_size(scan));
  plan->channels = opt->channels;
  if (plan->channels == 0) {
    plan->channels = 1;
    for (int64_t i = 0; i < scan->n; i++)
      if (!scan->images[i].header.grey) plan->channels = 3;
  }
  if (plan->channels != 1 && plan->channels != 3)
    return A3_FAIL(A3_ERR_USAGE, "channels %d: expected 1 or 3", plan->channels);
  return A3_OK;
}

// Decodes images [begin, begin + count) into images (count, C, H, W).
static a3_status load_batch(const folder_scan *scan, const import_plan *plan, int64_t begin,
                            int64_t count, uint8_t *images, int32_t *labels) {
  const size_t image_bytes = (size_t)plan->channels * plan->height * plan->width;
  for (int64_t i = 0; i < count; i++) {
    const image_entry *e = &scan->images[begin + i];
    a3_image img;
    A3_TRY(a3_png_read(e->path, plan->channels, &img));
    const a3_status s = a3_image_fit(&img, plan->height, plan->width, plan->fit, e->path,
                                     images + (size_t)i * image_bytes);
    a3_image_free(&img);
    A3_TRY(s);
    labels[i] = e->label;
  }
  return A3_OK;
}

static a3_status write_images(a3_ds_writer *w, const folder_scan *scan, const import_plan *plan) {
  A3_TRY(
      a3_ds_writer_add_split(w, plan->split, scan->n, plan->channels, plan->height, plan->width));
  uint8_t *images = NULL; // (BATCH_IMAGES, C, H, W) uint8
  int32_t *labels = NULL; // (BATCH_IMAGES) int32
  a3_status s =
      a3_alloc((void **)&images, BATCH_IMAGES, (size_t)plan->channels * plan->height * plan->width);
  if (s == A3_OK) s = A3_ALLOC(labels, BATCH_IMAGES);
  for (int64_t begin = 0; begin < scan->n && s == A3_OK; begin += BATCH_IMAGES) {
    const int64_t count = scan->n - begin < BATCH_IMAGES ? scan->n - begin : BATCH_IMAGES;
    s = load_batch(scan, plan, begin, count, images, labels);
    if (s == A3_OK) s = a3_ds_writer_write(w, begin, count, images, labels);
  }
  free(images);
  free(labels);
  return s;
}

static const char *fit_name(a3_fit fit) {
  switch (fit) {
  case A3_FIT_PAD: return "padded (centred on black)";
  case A3_FIT_RESIZE: return "resized (area average / bilinear)";
  case A3_FIT_NONE: break;
  }
  return "kept at their size";
}

// The test folder of a two-split import: the train folder's classes, and
// images that reach the train split's size and channels.
static a3_status plan_test_split(const a3_image_import_options *opt, const folder_scan *train,
                                 import_plan *train_plan, const folder_scan *test,
                                 import_plan *plan) {
  int same = train->classes.count == test->classes.count;
  for (int i = 0; same && i < train->classes.count; i++)
    same = !strcmp(train->classes.items[i], test->classes.items[i]);
  if (!same)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s and %s hold different class subfolders (%d and %d); the test split "
                   "needs the train split's classes",
                   opt->dir, opt->test_dir, train->classes.count, test->classes.count);
  a3_image_import_options o = *opt;
  o.split = "test";
  A3_TRY(make_plan(&o, test, plan));
  if (plan->height != train_plan->height || plan->width != train_plan->width)
    return A3_FAIL(
        A3_ERR_INPUT, "%s holds %dx%d images but %s holds %dx%d; give --size to bring both to one",
        opt->dir, train_plan->height, train_plan->width, opt->test_dir, plan->height, plan->width);
  if (plan->channels != train_plan->channels) // a colour image in either folder
    plan->channels = train_plan->channels = 3;
  return A3_OK;
}

static a3_status write_dataset(const a3_image_import_options *opt, const folder_scan *scan,
                               const import_plan *plan, const folder_scan *test_scan,
                               const import_plan *test_plan) {
  char source[4096];
  snprintf(source, sizeof source,
           "PNG folder %s: %lld images in %d class subfolders, %s to %dx%d "
           "(HxW), %d channel(s)",
           opt->dir, (long long)scan->n, scan->classes.count, fit_name(plan->fit), plan->height,
           plan->width, plan->channels);
  a3_ds_writer *w = NULL;
  A3_TRY(a3_ds_writer_create(opt->out_path, source, (const char *const *)scan->classes.items,
                             scan->classes.count, &w));
  a3_status s = write_images(w, scan, plan);
  if (s == A3_OK && test_scan) s = write_images(w, test_scan, test_plan);
  if (s != A3_OK) {
    a3_ds_writer_abort(w);
    A3_TRY(s);
  }
  A3_TRY(a3_ds_writer_commit(w));
  return A3_OK;
}

static void report_split(const folder_scan *scan, const import_plan *plan, a3_import_report *r) {
  a3_import_split *sp = &r->splits[r->n_splits++];
  snprintf(sp->name, sizeof sp->name, "%s", plan->split);
  sp->n = scan->n;
  sp->channels = plan->channels;
  sp->height = plan->height;
  sp->width = plan->width;
}

a3_status a3_import_images(const a3_image_import_options *opt, a3_import_report *report) {
  if ((opt->height > 0) != (opt->width > 0) || (opt->height > 0) != (opt->fit != A3_FIT_NONE))
    return A3_FAIL(A3_ERR_USAGE, "a target size needs both height and width and a fit mode "
                                 "(pad or resize), and a fit mode needs a size");
  if (opt->test_dir && opt->split && strcmp(opt->split, "train"))
    return A3_FAIL(A3_ERR_USAGE, "a test folder comes with the train split, not '%s'", opt->split);
  folder_scan scan = {0}, test_scan = {0};
  import_plan plan = {0}, test_plan = {0};
  a3_status s = scan_folder(opt->dir, &scan);
  if (s == A3_OK) s = make_plan(opt, &scan, &plan);
  if (s == A3_OK && opt->test_dir) s = scan_folder(opt->test_dir, &test_scan);
  if (s == A3_OK && opt->test_dir) s = plan_test_split(opt, &scan, &plan, &test_scan, &test_plan);
  if (s == A3_OK)
    s = write_dataset(opt, &scan, &plan, opt->test_dir ? &test_scan : NULL, &test_plan);
  if (s == A3_OK && report) {
    memset(report, 0, sizeof *report);
    report->num_classes = scan.classes.count;
    report_split(&scan, &plan, report);
    if (opt->test_dir) report_split(&test_scan, &test_plan, report);
  }
  scan_free(&scan);
  scan_free(&test_scan);
  A3_TRY(s);
  return A3_OK;
}
