#!/bin/sh
# Tests backup.sh with awkward file names; prints FAIL and exits 1 at the first failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# a plain name
printf 'plain\n' > "$tmp/plain.txt"
out=$(sh "$here/backup.sh" "$tmp/plain.txt" "$tmp/out") || fail "plain: backup.sh exited non-zero"
[ "$out" = "$tmp/out/plain.txt.bak" ] || fail "plain: printed '$out'"
cmp -s "$tmp/plain.txt" "$tmp/out/plain.txt.bak" || fail "plain: copy missing or different"

# spaces, two in a row, in the file and the directory
printf 'hello\n' > "$tmp/my  notes.txt"
out=$(sh "$here/backup.sh" "$tmp/my  notes.txt" "$tmp/back ups") || fail "spaces: backup.sh exited non-zero"
[ "$out" = "$tmp/back ups/my  notes.txt.bak" ] || fail "spaces: printed '$out'"
cmp -s "$tmp/my  notes.txt" "$tmp/back ups/my  notes.txt.bak" || fail "spaces: copy missing or different"

# a glob character that matches other files
printf 'star\n' > "$tmp/a*.txt"
printf 'other\n' > "$tmp/ab.txt"
out=$(sh "$here/backup.sh" "$tmp/a*.txt" "$tmp/globs") || fail "glob: backup.sh exited non-zero"
[ "$out" = "$tmp/globs/a*.txt.bak" ] || fail "glob: printed '$out'"
cmp -s "$tmp/a*.txt" "$tmp/globs/a*.txt.bak" || fail "glob: copy missing or different"
[ ! -e "$tmp/globs/ab.txt.bak" ] || fail "glob: copied ab.txt too"

echo "ok: backup.sh"
