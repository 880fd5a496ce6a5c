# Helpers for the release scripts (POSIX sh); source this file.

# trim STRING: prints STRING without its leading and trailing blanks
trim() {
    printf '%s\n' "$1" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'
}

# repeat N STRING: prints STRING N times, then a newline
repeat() {
    _i=0
    while [ "$_i" -lt "$1" ]; do
        printf '%s' "$2"
        _i=$((_i + 1))
    done
    printf '\n'
}
