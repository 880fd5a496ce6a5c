#!/bin/sh
# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
fail() { echo "FAIL: $*"; exit 1; }
expect() { [ "$1" = "$2" ] || fail "$3: wanted '$1', got '$2'"; }

cd "$(mktemp -d)" || exit 1
touch aa ab
expect "a*|b" "$(join_by '|' 'a*' b)" "a glob item is not expanded"
expect "1%s2" "$(join_by '%s' 1 2)" "a printf directive in the separator is literal"
expect 'p\nq' "$(join_by '\n' p q)" "a backslash in the separator is literal"
expect "-n,-e" "$(join_by , -n -e)" "items that look like echo options"
expect ",," "$(join_by , '' '' '')" "empty items are kept"
expect "x  y" "$(join_by ' ' 'x ' y)" "trailing blanks in items are kept"
# exactly one line is printed
[ "$(join_by , a b | wc -l)" -eq 1 ] || fail "join_by printed more than one line"
# the other helpers still work
expect "b" "$(trim ' b ')" "trim"
expect "zzz" "$(repeat 3 z)" "repeat"
echo "ok: hidden lib.sh"
