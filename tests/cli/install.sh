# install.sh - `make install` and `make uninstall` with PREFIX and DESTDIR put
# every tool and man page in place and take them away again.
. "$FM_TOP/tests/cli-lib.sh"
D=$T/stage
make -s -o all -C "$FM_TOP" BUILD="$FM_BUILD" PREFIX=/opt/fm DESTDIR="$D" install >"$T/log" 2>&1
ok "make install PREFIX=/opt/fm DESTDIR=..."
for t in "$FM_BUILD"/fm-*; do
	name=${t##*/}
	[ -x "$D/opt/fm/bin/$name" ]; ok "installed $name"
	[ -f "$D/opt/fm/share/man/man1/$name.1" ]; ok "installed $name.1"
done
[ -f "$D/opt/fm/share/man/man5/fm-formats.5" ] && [ -f "$D/opt/fm/share/man/man7/fm.7" ]
ok "installed fm-formats.5 and fm.7"
"$D/opt/fm/bin/fm-chunk" --version | grep -q '^fm-chunk '; ok "the installed fm-chunk runs"
make -s -o all -C "$FM_TOP" BUILD="$FM_BUILD" PREFIX=/opt/fm DESTDIR="$D" uninstall >"$T/log" 2>&1
ok "make uninstall"
[ -z "$(find "$D" -type f)" ]; ok "nothing left behind"
done_testing
