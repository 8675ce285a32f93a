/*
 * checksum.h - CRC-32C (Castagnoli) for record integrity and 64-bit FNV-1a
 * for content identity.  Both are incremental: pass the previous value back in
 * (start from 0 for CRC-32C and FM_FNV64_INIT for FNV-1a).
 */
#ifndef FM_CHECKSUM_H
#define FM_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#define FM_FNV64_INIT UINT64_C(0xcbf29ce484222325)

uint32_t fm_crc32c(uint32_t crc, const void *buf, size_t len);
uint64_t fm_fnv64(uint64_t h, const void *buf, size_t len);

#endif
