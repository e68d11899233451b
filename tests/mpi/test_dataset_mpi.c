// Sharded collective reads on 4 ranks. Rank 0 imports Debian's Fashion-MNIST
// into a temporary file; every rank then reads its shard of each split and
// compares it byte for byte with the gzipped IDX source, read here with plain
// zlib (not a3fta's IDX parser). Also: shards are disjoint and cover the
// split; seeded random subsets agree on every rank and differ between seeds;
// subsets whose size is not a multiple of the rank count, and one smaller
// than it (an empty shard), read correctly without hanging.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dataset.h"
#include "mpi_test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static int rank, nranks;

typedef struct {
  const char *split, *images_gz, *labels_gz;
  int64_t n;
  uint8_t *images; // (n, 28, 28) from the IDX file
  uint8_t *labels; // (n)
} reference;

enum { IMAGE_BYTES = 28 * 28 };

// Reads `len` bytes after a `skip`-byte header of a gzipped file.
static uint8_t *read_gz(const char *name, size_t skip, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", A3_FASHION_MNIST_DEFAULT_DIR, name);
  gzFile gz = gzopen(path, "rb");
  uint8_t *buf = malloc(len + skip);
  const int ok = gz && buf && gzread(gz, buf, (unsigned)(len + skip)) == (int)(len + skip);
  if (gz) gzclose(gz);
  CHECK_MSG(ok, "cannot read %s", path);
  if (!ok) {
    free(buf);
    return NULL;
  }
  memmove(buf, buf + skip, len);
  return buf;
}

static int load_reference(reference *ref) {
  ref->images = read_gz(ref->images_gz, 16, (size_t)ref->n * IMAGE_BYTES);
  ref->labels = read_gz(ref->labels_gz, 8, (size_t)ref->n);
  return ref->images && ref->labels ? 0 : -1;
}

// Reads rows `indices` (this rank's part of them) and compares with the source.
static void read_and_compare(a3_dataset *ds, const reference *ref, const int64_t *indices,
                             int64_t count, const char *what) {
  uint8_t *images = malloc((size_t)(count > 0 ? count : 1) * IMAGE_BYTES);
  int32_t *labels = malloc((size_t)(count > 0 ? count : 1) * sizeof *labels);
  const a3_status s = a3_dataset_read(ds, ref->split, indices, count, images, labels);
  CHECK_MSG(s == A3_OK, "rank %d: %s: read failed: %s", rank, what, a3_error_message());
  int64_t bad = 0;
  for (int64_t i = 0; s == A3_OK && i < count; i++) {
    const int64_t k = indices[i];
    bad += memcmp(images + i * IMAGE_BYTES, ref->images + k * IMAGE_BYTES, IMAGE_BYTES) != 0;
    bad += labels[i] != ref->labels[k];
  }
  CHECK_MSG(bad == 0, "rank %d: %s: %lld rows differ from the IDX source", rank, what,
            (long long)bad);
  free(images);
  free(labels);
}

// Every rank's [begin, end) gathered: consecutive, disjoint, covering [0, m).
static void check_cover(int64_t begin, int64_t end, int64_t m, const char *what) {
  int64_t mine[2] = {begin, end}, *all = malloc(2 * sizeof(int64_t) * (size_t)nranks);
  MPI_Allgather(mine, 2, MPI_INT64_T, all, 2, MPI_INT64_T, MPI_COMM_WORLD);
  int64_t next = 0;
  for (int r = 0; r < nranks; r++) {
    CHECK_MSG(all[2 * r] == next && all[2 * r + 1] >= all[2 * r],
              "%s: rank %d's shard [%lld, %lld) does not start at %lld", what, r,
              (long long)all[2 * r], (long long)all[2 * r + 1], (long long)next);
    next = all[2 * r + 1];
  }
  CHECK_MSG(next == m, "%s: shards cover [0, %lld), expected [0, %lld)", what, (long long)next,
            (long long)m);
  free(all);
}

static void test_full_split(a3_dataset *ds, const reference *ref) {
  a3_split_info info;
  CHECK(a3_dataset_split_info(ds, ref->split, &info) == A3_OK && info.n == ref->n);
  int64_t begin = 0, end = 0;
  a3_shard_range(ref->n, rank, nranks, &begin, &end);
  check_cover(begin, end, ref->n, ref->split);
  int64_t *idx = malloc((size_t)(end - begin + 1) * sizeof *idx);
  for (int64_t i = begin; i < end; i++) idx[i - begin] = i;
  read_and_compare(ds, ref, idx, end - begin, ref->split);
  free(idx);
}

static uint64_t subset_hash(a3_dataset *ds, int random, uint64_t seed, int64_t shots,
                            const int *classes, int n_classes, int64_t **idx, int64_t *n) {
  const a3_subset_spec spec = {"train", classes, n_classes, shots, random, seed};
  const a3_status s = a3_dataset_select(ds, &spec, idx, n);
  CHECK_MSG(s == A3_OK, "rank %d: select failed: %s", rank, a3_error_message());
  return a3_hash64(*idx, (size_t)*n * sizeof **idx, A3_HASH_SEED);
}

// A subset's shards: read them, compare, and check they cover it.
static void read_subset_shards(a3_dataset *ds, const reference *ref, const int64_t *idx, int64_t n,
                               const char *what) {
  int64_t begin = 0, end = 0;
  a3_shard_range(n, rank, nranks, &begin, &end);
  check_cover(begin, end, n, what);
  read_and_compare(ds, ref, idx + begin, end - begin, what);
}

static void test_subsets(a3_dataset *ds, const reference *ref) {
  const int c09[2] = {0, 9}, c012[3] = {0, 1, 2}, c5[1] = {5};
  int64_t *a = NULL, *b = NULL, na = 0, nb = 0;
  const uint64_t h7 = subset_hash(ds, 1, 7, 10, c09, 2, &a, &na);
  uint64_t lo = 0, hi = 0;
  MPI_Allreduce(&h7, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&h7, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  CHECK_MSG(lo == hi, "seed 7 gave different subsets on different ranks");
  int per_class[10] = {0};
  for (int64_t i = 0; i < na; i++) per_class[ref->labels[a[i]]]++;
  CHECK_MSG(na == 20 && per_class[0] == 10 && per_class[9] == 10, "seed 7: %lld items",
            (long long)na);
  const uint64_t h8 = subset_hash(ds, 1, 8, 10, c09, 2, &b, &nb);
  CHECK_MSG(h8 != h7 && nb == 20, "seeds 7 and 8 gave the same subset");
  read_subset_shards(ds, ref, a, na, "random 20 of classes {0, 9}");
  free(a);
  free(b);
  subset_hash(ds, 1, 3, 10, c012, 3, &a, &na); // 30 items: shards of 7 and 8
  CHECK(na == 30);
  read_subset_shards(ds, ref, a, na, "30 items over 4 ranks");
  free(a);
  // 1000 scattered items: each shard has ~240 runs, more than one leaf of
  // the selection's union tree (64 runs), so the H5Scombine_select path runs.
  subset_hash(ds, 1, 11, 100, NULL, 0, &a, &na);
  CHECK(na == 1000);
  read_subset_shards(ds, ref, a, na, "random 100 of every class");
  free(a);
  subset_hash(ds, 0, 0, 3, c5, 1, &a, &na); // 3 items: one rank reads nothing
  CHECK(na == 3);
  read_subset_shards(ds, ref, a, na, "3 items over 4 ranks");
  free(a);
}

// Rank 0 imports into a fresh temporary folder and tells the others where.
static a3_status import_shared(char *path, size_t cap) {
  int code = A3_OK;
  if (rank == 0) {
    char tmpl[] = "/tmp/a3fta-mpi-XXXXXX";
    const char *dir = mkdtemp(tmpl);
    snprintf(path, cap, "%s/fmnist.h5", dir ? dir : "/tmp");
    const double t0 = MPI_Wtime();
    code = dir ? a3_import_fashion_mnist(NULL, path, NULL) : A3_ERR_IO;
    if (code) fprintf(stderr, "import failed: %s\n", a3_error_message());
    fprintf(stderr, "rank 0: imported Fashion-MNIST in %.2f s\n", MPI_Wtime() - t0);
  }
  MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Bcast(path, (int)cap, MPI_CHAR, 0, MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD); // the file is complete (renamed) before anyone opens it
  return (a3_status)code;
}

static void run(const char *path) {
  reference refs[2] = {
      {"train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000, NULL, NULL},
      {"test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000, NULL, NULL}};
  const double t0 = MPI_Wtime();
  a3_dataset *ds = NULL;
  CHECK_MSG(a3_dataset_open(MPI_COMM_WORLD, path, &ds) == A3_OK, "rank %d: open: %s", rank,
            a3_error_message());
  for (int s = 0; s < 2 && ds; s++) {
    if (load_reference(&refs[s]) != 0) continue;
    test_full_split(ds, &refs[s]);
    if (s == 0) test_subsets(ds, &refs[s]);
  }
  a3_dataset_close(ds);
  if (rank == 0) fprintf(stderr, "rank 0: reads and checks took %.2f s\n", MPI_Wtime() - t0);
  for (int s = 0; s < 2; s++) {
    free(refs[s].images);
    free(refs[s].labels);
  }
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (access(A3_FASHION_MNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
    if (rank == 0) fprintf(stderr, "skip: Debian's dataset-fashion-mnist is not installed\n");
    MPI_Finalize();
    return 77;
  }
  char path[512] = "";
  if (import_shared(path, sizeof path) == A3_OK)
    run(path);
  else
    CHECK_MSG(0, "rank %d: the import on rank 0 failed", rank);
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    remove(path);
    *strrchr(path, '/') = '\0';
    rmdir(path);
  }
  const int rc = test_done_all_ranks("test_mpi_dataset", MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
