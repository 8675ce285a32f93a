/* test_cli.c - the option-value parsers every tool shares (common/cli.c). */
#include <math.h>
#include <stdint.h>

#include "cli.h"
#include "tap.h"

int
main(void)
{
	static const char *bad_u64[] = {
		"", " 1", "+1", "-1", "1 ", "1x", "0x10", "18446744073709551616", "1e3",
	};
	static const char *bad_f64[] = { "", " 1", "1x", "nan", "inf", "-inf", "1e999", "0.5%" };
	uint64_t u;
	double f;
	int d;

	ok(fm_parse_u64("0", 0, 10, &u) && u == 0, "0 in [0, 10]");
	ok(fm_parse_u64("18446744073709551615", 0, UINT64_MAX, &u) && u == UINT64_MAX, "UINT64_MAX");
	ok(!fm_parse_u64("11", 0, 10, &u), "above the range");
	ok(!fm_parse_u64("0", 1, 10, &u), "below the range");
	for (size_t i = 0; i < sizeof bad_u64 / sizeof *bad_u64; i++)
		ok(!fm_parse_u64(bad_u64[i], 0, UINT64_MAX, &u), "whole number refused: '%s'", bad_u64[i]);
	ok(fm_parse_f64("0.25", 0, 1, &f) && f == 0.25, "0.25");
	ok(fm_parse_f64("-3e2", -HUGE_VAL, HUGE_VAL, &f) && f == -300, "-3e2");
	ok(!fm_parse_f64("1.5", 0, 1, &f), "number above the range");
	for (size_t i = 0; i < sizeof bad_f64 / sizeof *bad_f64; i++)
		ok(!fm_parse_f64(bad_f64[i], -HUGE_VAL, HUGE_VAL, &f), "number refused: '%s'", bad_f64[i]);
	ok(fm_parse_device("auto", &d) && d == FM_DEVICE_AUTO, "auto");
	ok(fm_parse_device("cpu", &d) && d == FM_DEVICE_CPU, "cpu");
	ok(fm_parse_device("cuda", &d) && d == 0, "cuda is cuda:0");
	ok(fm_parse_device("cuda:7", &d) && d == 7, "cuda:7");
	ok(fm_parse_device("cuda:1023", &d) && d == 1023, "cuda:1023");
	ok(!fm_parse_device("cuda:1024", &d), "cuda:1024 refused");
	ok(!fm_parse_device("cuda:", &d) && !fm_parse_device("cuda:-1", &d) &&
	    !fm_parse_device("cuda:1x", &d) && !fm_parse_device("gpu", &d) &&
	    !fm_parse_device("CUDA", &d), "other spellings refused");
	return done_testing();
}
