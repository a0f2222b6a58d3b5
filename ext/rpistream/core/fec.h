/* XOR parity for the FEC encoder (_fec.pyx). */
#ifndef RPISTREAM_FEC_H
#define RPISTREAM_FEC_H

#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/* Two 64-bit lanes: SSE2 on x86-64, NEON on aarch64, through GCC/Clang vector
 * extensions; plain uint64 pairs elsewhere. Loads and stores go through memcpy,
 * which compiles to unaligned vector moves: packets in a batch start anywhere. */
#if defined(__GNUC__)
typedef uint64_t fec_lane __attribute__((vector_size(16)));
#else
typedef struct { uint64_t a, b; } fec_lane;
#endif

static inline void fec_xor_lane(unsigned char *dst, const unsigned char *src)
{
#if defined(__GNUC__)
    fec_lane d, s;
    memcpy(&d, dst, sizeof d);
    memcpy(&s, src, sizeof s);
    d ^= s;
    memcpy(dst, &d, sizeof d);
#else
    uint64_t d[2], s[2];
    memcpy(d, dst, 16);
    memcpy(s, src, 16);
    d[0] ^= s[0];
    d[1] ^= s[1];
    memcpy(dst, d, 16);
#endif
}

/* dst[0:size] ^= src[0:size]: 64 bytes per iteration (four lanes, so the loads
 * of one lane overlap the stores of the previous), then 16, 8, and single bytes,
 * as aiohttp's websocket mask does with its 8-byte steps. */
static inline void fec_xor(unsigned char *dst, const unsigned char *src, ssize_t size)
{
    ssize_t i = 0;
    for (; i + 64 <= size; i += 64) {
        fec_xor_lane(dst + i, src + i);
        fec_xor_lane(dst + i + 16, src + i + 16);
        fec_xor_lane(dst + i + 32, src + i + 32);
        fec_xor_lane(dst + i + 48, src + i + 48);
    }
    for (; i + 16 <= size; i += 16)
        fec_xor_lane(dst + i, src + i);
    if (i + 8 <= size) {
        uint64_t d, s;
        memcpy(&d, dst + i, 8);
        memcpy(&s, src + i, 8);
        d ^= s;
        memcpy(dst + i, &d, 8);
        i += 8;
    }
    for (; i < size; i++)
        dst[i] ^= src[i];
}

#endif
