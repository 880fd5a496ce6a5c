/* The benchmark's oracle (bench.yaml `check`); not part of the work packet. */
#include <stdio.h>
#include <string.h>

#include "strbuf.h"

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

int main(void)
{
    const char *src = "abcdefgh";
    size_t len = strlen(src), size;

    for (size = 0; size <= 12; size++) {
        char buf[32];
        size_t n, want = size == 0 ? 0 : (len < size - 1 ? len : size - 1);
        char what[64];

        memset(buf, 'X', sizeof buf);
        n = copy_truncate(buf, size, src);
        snprintf(what, sizeof what, "dstsize %zu", size);
        check(n == want, what);
        check(size == 0 ? buf[0] == 'X' : (strncmp(buf, src, want) == 0 && buf[want] == '\0'), what);
        check(buf[size] == 'X', what);
    }
    {
        char one[1] = {'X'};
        check(copy_truncate(one, 1, "zzz") == 0 && one[0] == '\0', "dstsize 1 gives an empty string");
    }
    if (failures == 0)
        printf("ok: hidden strbuf\n");
    return failures != 0;
}
