// Philox4x32-10 (Salmon et al., SC'11) and FNV-1a hashing.
#include "a3fta/core.h"

// The formula is a3_philox4x32_hd (core.h), shared with the CUDA kernels.
a3_philox_block a3_philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  return a3_philox4x32_hd(key, counter_hi, counter_lo);
}

uint64_t a3_rng_u64(uint64_t seed, uint64_t stream, uint64_t index) {
  a3_philox_block b = a3_philox4x32(seed, stream, index);
  return (uint64_t)b.v[0] | ((uint64_t)b.v[1] << 32);
}

uint64_t a3_rng_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n) {
  // Rejection sampling over fresh counters: the threshold removes the
  // 2^64 mod n values that would make small results more likely.
  const uint64_t threshold = (0 - n) % n;
  for (uint64_t attempt = 0;; attempt++) {
    a3_philox_block b = a3_philox4x32(seed, stream ^ (attempt << 56), index);
    uint64_t r = (uint64_t)b.v[0] | ((uint64_t)b.v[1] << 32);
    if (r >= threshold) return r % n;
  }
}

uint64_t a3_hash64(const void *data, size_t len, uint64_t seed) {
  const unsigned char *p = data;
  uint64_t h = seed;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}
