/* cli.c - strict option values; see cli.h. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

bool
fm_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	unsigned long long v;
	char *end;

	/* strtoull takes a sign and leading blanks; an option value may not. */
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end != '\0' || errno != 0 || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

bool
fm_parse_f64(const char *s, double lo, double hi, double *out)
{
	double v;
	char *end;

	if (*s == '\0' || *s == ' ' || *s == '\t')
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (*end != '\0' || errno != 0 || !isfinite(v) || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

bool
fm_parse_device(const char *s, int *device)
{
	uint64_t n;

	if (strcmp(s, "auto") == 0)
		*device = FM_DEVICE_AUTO;
	else if (strcmp(s, "cpu") == 0)
		*device = FM_DEVICE_CPU;
	else if (strcmp(s, "cuda") == 0)
		*device = 0;
	else if (strncmp(s, "cuda:", 5) == 0 && fm_parse_u64(s + 5, 0, FM_DEVICE_MAX, &n))
		*device = (int)n;
	else
		return false;
	return true;
}
