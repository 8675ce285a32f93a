# fixtures.sh - the model fixtures are the files models/PROVENANCE.md names.
. "$FM_TOP/tests/cli-lib.sh"
grep -E '^\| [^ ]+ \| [0-9]+ \| [0-9a-f]{64} \|$' "$FM_TOP/models/PROVENANCE.md" |
	awk -F' *\\| *' '{ print $4 "  " $2 }' >"$T/sums"
[ "$(wc -l <"$T/sums")" -eq 9 ]; ok "PROVENANCE.md lists 9 fixtures"
(cd "$FM_TOP/models" && sha256sum -c --quiet "$T/sums"); ok "every fixture matches its sha256"
done_testing
