/* Byte-level helpers for the RTP packetizers (_rtp.pyx). */
#ifndef RPISTREAM_RTP_H
#define RPISTREAM_RTP_H

#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/* Offset of the first Annex-B start code 00 00 01 (H.264 §B.1) at or after
 * `from`, or -1. memchr for the rare 0x01 byte (SIMD in glibc) and a look back
 * at the two bytes before it: about one candidate per 256 bytes of slice data,
 * where a byte-by-byte scan would branch on every byte. */
static inline ssize_t rtp_find_start_code(const unsigned char *data, ssize_t from,
                                          ssize_t size)
{
    ssize_t i = from + 2;
    while (i < size) {
        const unsigned char *one = memchr(data + i, 1, (size_t)(size - i));
        if (one == NULL)
            return -1;
        i = one - data;
        if (data[i - 1] == 0 && data[i - 2] == 0)
            return i - 2;
        i += 1;
    }
    return -1;
}

#endif
