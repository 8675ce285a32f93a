/*
 * cli.h - parsing the values of command-line options the same way in every
 * tool: strict numbers (no sign, no blanks, nothing after them, in range)
 * and the --device spelling.  Each tool words its own usage message.
 */
#ifndef FM_CLI_H
#define FM_CLI_H

#include <stdbool.h>
#include <stdint.h>

/* A whole decimal number in [lo, hi]; false for anything else. */
bool fm_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* A finite number in [lo, hi] (strtod's syntax, nothing after it); false otherwise. */
bool fm_parse_f64(const char *s, double lo, double hi, double *out);

/* --device: "auto", "cpu", "cuda" (device 0) or "cuda:N" with N <= FM_DEVICE_MAX. */
enum { FM_DEVICE_AUTO = -1, FM_DEVICE_CPU = -2, FM_DEVICE_MAX = 1023 };
bool fm_parse_device(const char *s, int *device);

#endif
