/* json.c - JSON strings that stay valid whatever bytes a document holds. */
#include "json.h"

#include "unicode.h"

void
fm_json_string(FILE *f, const char *s, size_t len)
{
	size_t i = 0, n;

	putc('"', f);
	while (i < len) {
		unsigned char b = (unsigned char)s[i];
		if (b < 0x80) {
			switch (b) {
			case '"':  fputs("\\\"", f); break;
			case '\\': fputs("\\\\", f); break;
			case '\n': fputs("\\n", f); break;
			case '\t': fputs("\\t", f); break;
			case '\r': fputs("\\r", f); break;
			default:
				if (b < 0x20 || b == 0x7f)
					fprintf(f, "\\u%04x", b);
				else
					putc(b, f);
			}
			i++;
			continue;
		}
		uint32_t cp = fm_utf8_next(s + i, len - i, &n);
		if (cp == FM_UNI_REPLACEMENT && n == 1)
			fputs("\\ufffd", f);   /* a byte that is not UTF-8 */
		else
			fwrite(s + i, 1, n, f);
		i += n;
	}
	putc('"', f);
}
