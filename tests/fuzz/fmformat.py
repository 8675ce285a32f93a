"""fmformat.py - the checksums and record framing of fm-formats(5), for the
corpus generators.

Written from the specification and sharing no code with common/, so the
files these helpers encode check the specification as much as the library.
Shared by gen_*_corpus.py, which find it beside them on sys.path.
"""
import struct


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli), bitwise: slow and plainly right."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def fnv1a64(data):
    """64-bit FNV-1a, the content hash over every byte before the end record."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def record(tag, payload):
    """One record: tag, payload length, payload, CRC-32C over all three."""
    r = tag + struct.pack("<I", len(payload)) + payload
    return r + struct.pack("<I", crc32c(r))
