// Philox4x32-10 (Salmon et al., SC'11) and FNV-1a hashing.
#include "a3fta/core.h"

static void philox_round(uint32_t ctr[4], const uint32_t key[2]) {
  const uint64_t p0 = (uint64_t)0xD2511F53u * ctr[0];
  const uint64_t p1 = (uint64_t)0xCD9E8D57u * ctr[2];
  const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
  const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
  const uint32_t c1 = ctr[1], c3 = ctr[3];
  ctr[0] = hi1 ^ c1 ^ key[0];
  ctr[1] = lo1;
  ctr[2] = hi0 ^ c3 ^ key[1];
  ctr[3] = lo0;
}

a3_philox_block a3_philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  uint32_t k[2] = {(uint32_t)key, (uint32_t)(key >> 32)};
  uint32_t c[4] = {(uint32_t)counter_lo, (uint32_t)(counter_lo >> 32), (uint32_t)counter_hi,
                   (uint32_t)(counter_hi >> 32)};
  for (int round = 0; round < 10; round++) {
    philox_round(c, k);
    if (round < 9) {
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
  }
  a3_philox_block b = {{c[0], c[1], c[2], c[3]}};
  return b;
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
