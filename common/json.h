/* json.h - writing JSON values for the tools' --list/--json lines. */
#ifndef FM_JSON_H
#define FM_JSON_H

#include <stddef.h>
#include <stdio.h>

/*
 * Writes s[0..len) as a JSON string: quotes, backslashes and control
 * characters escaped, and each byte that is not part of valid UTF-8 written
 * as U+FFFD, so the line stays valid JSON whatever the document held.
 */
void fm_json_string(FILE *f, const char *s, size_t len);

#endif
