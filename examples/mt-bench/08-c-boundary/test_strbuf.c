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
    char buf[16];
    size_t n;

    memset(buf, 'X', sizeof buf);
    n = copy_truncate(buf, 4, "abcdef");
    check(n == 3, "truncates to dstsize - 1 characters");
    check(strcmp(buf, "abc") == 0, "the copy is \"abc\"");
    check(buf[4] == 'X', "nothing is written past dstsize");

    memset(buf, 'X', sizeof buf);
    n = copy_truncate(buf, sizeof buf, "hi");
    check(n == 2 && strcmp(buf, "hi") == 0, "a short string is copied whole");

    memset(buf, 'X', sizeof buf);
    n = copy_truncate(buf, 3, "abc");
    check(n == 2 && strcmp(buf, "ab") == 0 && buf[3] == 'X', "one character too long");

    if (failures == 0)
        printf("ok: strbuf\n");
    return failures != 0;
}
