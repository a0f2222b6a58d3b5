/* Network byte order (RFC 3550 §5.1: every RTP header field is big-endian),
 * byte by byte: no alignment assumptions, so the same code is right on aarch64
 * and x86 whatever the offset of the field in the packet. */
#ifndef RPISTREAM_BYTEORDER_H
#define RPISTREAM_BYTEORDER_H

#include <stdint.h>

static inline uint16_t get_be16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline void put_be16(unsigned char *p, uint16_t value)
{
    p[0] = (unsigned char)(value >> 8);
    p[1] = (unsigned char)value;
}

static inline void put_be32(unsigned char *p, uint32_t value)
{
    p[0] = (unsigned char)(value >> 24);
    p[1] = (unsigned char)(value >> 16);
    p[2] = (unsigned char)(value >> 8);
    p[3] = (unsigned char)value;
}

#endif
