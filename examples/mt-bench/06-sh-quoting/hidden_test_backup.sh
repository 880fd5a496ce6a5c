#!/bin/sh
# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$tmp" || exit 1

check() { # check NAME DIR: back NAME up into DIR, from inside $tmp, by a relative path
    printf 'data %s\n' "$1" > "$1"
    out=$(sh "$here/backup.sh" "$1" "$2") || fail "'$1': backup.sh exited non-zero"
    [ "$out" = "$2/$1.bak" ] || fail "'$1': printed '$out'"
    cmp -s -- "$1" "$2/$1.bak" || fail "'$1': copy missing or different"
}
check 'two  spaces.txt' 'dir with  spaces'
check '-n.txt' 'dashes'
check 'back\slash.txt' 'slashes'
check '[x].txt' 'brackets'
check 'tab	name.txt' 'tabs'
# a missing file is an error, and nothing is printed
out=$(sh "$here/backup.sh" 'no such file' 'missing' 2>/dev/null) && fail "a missing file succeeded"
[ -z "$out" ] || fail "a missing file printed '$out'"
echo "ok: hidden backup.sh"
