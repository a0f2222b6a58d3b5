from libc.stdint cimport uint16_t, uint32_t


cdef extern from "byteorder.h" nogil:
    uint16_t get_be16(const unsigned char *p) noexcept
    void put_be16(unsigned char *p, uint16_t value) noexcept
    void put_be32(unsigned char *p, uint32_t value) noexcept
