#!/usr/bin/env python3
# gen-unicode-data.py - writes common/unicode_data.c, the code point tables
# behind common/unicode.c, from the Unicode database built into Python
# (unicodedata), so the tables need no download and name their version.
#
# The tables mirror what llama.cpp's tokenizers look at:
#   - flag ranges: the general category folded into the groups number (N*),
#     letter (L*), separator (Z*), mark (M*), punctuation (P*), symbol (S*),
#     control (Cc, Cf, Co, Cs) and undefined (Cn), plus a whitespace bit for
#     the Unicode White_Space property;
#   - lowercase: the simple (one code point to one code point) mapping;
#   - NFD base: the first code point of the full canonical decomposition,
#     which is how llama.cpp's simplified NFD strips accents ('u' for 'ử').
#
# Usage: scripts/gen-unicode-data.py > common/unicode_data.c

import sys
import unicodedata

MAX_CP = 0x110000

FLAG_UNDEFINED = 1 << 0
FLAG_NUMBER = 1 << 1
FLAG_LETTER = 1 << 2
FLAG_SEPARATOR = 1 << 3
FLAG_MARK = 1 << 4
FLAG_PUNCT = 1 << 5
FLAG_SYMBOL = 1 << 6
FLAG_CONTROL = 1 << 7
FLAG_WHITESPACE = 1 << 8
FLAG_BITS = 9

CATEGORY_FLAG = {
    'Cn': FLAG_UNDEFINED,
    'Cc': FLAG_CONTROL, 'Cf': FLAG_CONTROL, 'Co': FLAG_CONTROL, 'Cs': FLAG_CONTROL,
    'Lu': FLAG_LETTER, 'Ll': FLAG_LETTER, 'Lt': FLAG_LETTER, 'Lm': FLAG_LETTER, 'Lo': FLAG_LETTER,
    'Mn': FLAG_MARK, 'Mc': FLAG_MARK, 'Me': FLAG_MARK,
    'Nd': FLAG_NUMBER, 'Nl': FLAG_NUMBER, 'No': FLAG_NUMBER,
    'Pc': FLAG_PUNCT, 'Pd': FLAG_PUNCT, 'Ps': FLAG_PUNCT, 'Pe': FLAG_PUNCT,
    'Pi': FLAG_PUNCT, 'Pf': FLAG_PUNCT, 'Po': FLAG_PUNCT,
    'Sm': FLAG_SYMBOL, 'Sc': FLAG_SYMBOL, 'Sk': FLAG_SYMBOL, 'So': FLAG_SYMBOL,
    'Zs': FLAG_SEPARATOR, 'Zl': FLAG_SEPARATOR, 'Zp': FLAG_SEPARATOR,
}

# The White_Space property (PropList.txt), which unicodedata does not expose;
# str.isspace() differs (it adds U+001C..U+001F).  llama.cpp uses this list.
WHITESPACE = sorted(set(range(0x09, 0x0D + 1)) | set(range(0x2000, 0x200A + 1)) |
                    {0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000})


def flags_of(cp):
    f = CATEGORY_FLAG[unicodedata.category(chr(cp))]
    if cp in WHITESPACE_SET:
        f |= FLAG_WHITESPACE
    return f


def lower_of(cp):
    """The simple lowercase mapping, or None."""
    low = chr(cp).lower()
    if low == chr(cp):
        return None
    if len(low) != 1:
        # str.lower() applies the full mappings of SpecialCasing.txt; the one
        # unconditional multi-character lowercase is U+0130, whose simple
        # mapping is the first code point of the full one.
        assert cp == 0x130, hex(cp)
    return ord(low[0])


def nfd_base_of(cp):
    """First code point of the canonical decomposition, or None."""
    if 0xD800 <= cp <= 0xDFFF:
        return None
    base = ord(unicodedata.normalize('NFD', chr(cp))[0])
    return base if base != cp else None


def delta_ranges(pairs):
    """(cp, to) pairs -> (first, last, delta, stride): runs of code points a
    fixed stride apart that move by the same delta (A-Z, or the alternating
    upper/lower pairs of Latin Extended-A)."""
    out = []
    for cp, to in pairs:
        d = to - cp
        if out:
            first, last, delta, stride = out[-1]
            if delta == d:
                step = cp - last
                if (first == last and step in (1, 2)) or step == stride:
                    out[-1] = (first, cp, delta, step)
                    continue
        out.append((cp, cp, d, 1))
    return out


def const_ranges(pairs):
    """(cp, to) pairs -> (first, last, to): runs of consecutive code points
    with the same target (the Hangul syllables of one leading consonant)."""
    out = []
    for cp, to in pairs:
        if out and out[-1][1] == cp - 1 and out[-1][2] == to:
            out[-1] = (out[-1][0], cp, to)
        else:
            out.append((cp, cp, to))
    return out


WHITESPACE_SET = set(WHITESPACE)


def main():
    # Sanity: White_Space holds every separator and otherwise only controls.
    for cp in range(MAX_CP):
        cat = unicodedata.category(chr(cp))
        if cat[0] == 'Z':
            assert cp in WHITESPACE_SET, hex(cp)
    for cp in WHITESPACE:
        assert unicodedata.category(chr(cp)) in ('Zs', 'Zl', 'Zp', 'Cc'), hex(cp)

    flags = [flags_of(cp) for cp in range(MAX_CP)]
    ranges = []
    for cp, f in enumerate(flags):
        if not ranges or ranges[-1][1] != f:
            ranges.append((cp, f))

    lower = [(cp, lo) for cp in range(MAX_CP) if (lo := lower_of(cp)) is not None]
    nfd = [(cp, b) for cp in range(MAX_CP) if (b := nfd_base_of(cp)) is not None]
    lower_r = delta_ranges(lower)
    nfd_r = const_ranges(nfd)

    # Every mapping must survive the compression.
    for first, last, delta, stride in lower_r:
        assert (last - first) % stride == 0
    check = {}
    for first, last, delta, stride in lower_r:
        for cp in range(first, last + 1, stride):
            check[cp] = cp + delta
    assert check == dict(lower)
    # unicode.c finds the one range whose first is the last <= cp: they must not interleave.
    for a, b in zip(lower_r, lower_r[1:]):
        assert a[1] < b[0], (hex(a[0]), hex(b[0]))
    check = {}
    for first, last, to in nfd_r:
        for cp in range(first, last + 1):
            check[cp] = to
    assert check == dict(nfd)
    # Targets are single, already-final code points: no second pass needed.
    assert all(nfd_base_of(b) is None for _, b in nfd)

    o = []
    w = o.append
    w('/*')
    w(' * unicode_data.c - code point tables for unicode.c, generated by')
    w(' * scripts/gen-unicode-data.py from Python %s\'s unicodedata:'
      % '.'.join(map(str, sys.version_info[:3])))
    w(' * Unicode %s.  Do not edit; run the script again instead.' % unicodedata.unidata_version)
    w(' */')
    w('#include "unicode_data.h"')
    w('')
    w('const char fm_uni_version[] = "%s";' % unicodedata.unidata_version)
    w('')
    w('/* Flags of U+0000..U+00FF, for the common case without a search. */')
    w('const uint16_t fm_uni_flags_low[256] = {')
    for i in range(0, 256, 8):
        w('\t' + ' '.join('0x%03x,' % flags[cp] for cp in range(i, i + 8)))
    w('};')
    w('')
    w('/* (first << %d) | flags: flags hold from first up to the next entry\'s first. */' % FLAG_BITS)
    w('const uint32_t fm_uni_flag_ranges[] = {')
    items = ['0x%08x,' % ((cp << FLAG_BITS) | f) for cp, f in ranges]
    for i in range(0, len(items), 6):
        w('\t' + ' '.join(items[i:i + 6]))
    w('};')
    w('const size_t fm_uni_n_flag_ranges = %d;' % len(ranges))
    w('')
    w('/* first, last, delta, stride: lowercase of cp is cp + delta for cp = first + k*stride. */')
    w('const struct fm_uni_delta_range fm_uni_lower[] = {')
    for first, last, delta, stride in lower_r:
        w('\t{ 0x%05x, 0x%05x, %d, %d },' % (first, last, delta, stride))
    w('};')
    w('const size_t fm_uni_n_lower = %d;' % len(lower_r))
    w('')
    w('/* first, last, base: every cp in [first, last] has NFD base `base`. */')
    w('const struct fm_uni_const_range fm_uni_nfd[] = {')
    for first, last, to in nfd_r:
        w('\t{ 0x%05x, 0x%05x, 0x%05x },' % (first, last, to))
    w('};')
    w('const size_t fm_uni_n_nfd = %d;' % len(nfd_r))
    sys.stdout.write('\n'.join(o) + '\n')


if __name__ == '__main__':
    main()
