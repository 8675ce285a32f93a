# cli-lib.sh - helpers for the command-line tests, sourced by tests/cli/*.sh.
# Each check prints a TAP line; the script exits 1 at the end if any failed.
# FM_BUILD (the binaries) and FM_TOP (the repository) come from tests/run-all.
set -u
: "${FM_BUILD:?run through tests/run-all}" "${FM_TOP:?run through tests/run-all}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
n=0
failed=0
M=$FM_TOP/models

ok() { # description; status of the last command decides
	st=$?
	n=$((n + 1))
	if [ $st -eq 0 ]; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1"
		failed=$((failed + 1))
	fi
}

# expect_fail STATUS PATTERN description -- command...: the command exits with
# STATUS and prints exactly one line on stderr, matching the grep PATTERN.
expect_fail() {
	want=$1 pat=$2 desc=$3
	shift 4
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	lines=$(wc -l <"$T/err")
	if [ $st -eq "$want" ] && [ "$lines" -eq 1 ] && grep -q -- "$pat" "$T/err"; then
		true
	else
		echo "# wanted status $want and one line matching '$pat'; got status $st, stderr:"
		sed 's/^/#   /' "$T/err"
		false
	fi
	ok "$desc"
}

# expect_usage PATTERN description -- command...: status 2, and the first
# line of stderr (the reason; the usage follows it) matches PATTERN.
expect_usage() {
	pat=$1 desc=$2
	shift 3
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	if [ $st -eq 2 ] && head -n 1 "$T/err" | grep -q -- "$pat"; then
		true
	else
		echo "# wanted status 2 and a first line matching '$pat'; got status $st, stderr:"
		sed 's/^/#   /' "$T/err"
		false
	fi
	ok "$desc"
}

done_testing() {
	echo "1..$n"
	[ $failed -eq 0 ]
}
