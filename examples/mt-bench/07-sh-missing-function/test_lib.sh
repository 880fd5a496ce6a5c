#!/bin/sh
# Tests lib.sh; prints FAIL and exits 1 at the first failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
fail() { echo "FAIL: $*"; exit 1; }
expect() { # expect WANT GOT WHAT
    [ "$1" = "$2" ] || fail "$3: wanted '$1', got '$2'"
}

expect "a b" "$(trim '   a b  ')" "trim"
expect "-=-=" "$(repeat 2 '-=')" "repeat"

command -v join_by >/dev/null 2>&1 || fail "join_by is not defined"
expect "a, b, c" "$(join_by ', ' a b c)" "join_by with three items"
expect "solo" "$(join_by '-' solo)" "join_by with one item"
expect "" "$(join_by '-')" "join_by with no items"
expect "x y/z" "$(join_by / 'x y' z)" "join_by keeps spaces in items"
expect "1::2::3" "$(join_by :: 1 2 3)" "join_by with a two-character separator"

echo "ok: lib.sh"
