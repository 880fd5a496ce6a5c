#include <stdio.h>

#include "strutil.h"

int main(void)
{
    int failures = 0;

    if (count_char("banana", 'a') != 3) {
        printf("FAIL: three a's in banana\n");
        failures++;
    }
    if (count_char("a b c", ' ') != 2) {
        printf("FAIL: two spaces in \"a b c\"\n");
        failures++;
    }
    if (count_char("", 'x') != 0) {
        printf("FAIL: nothing in the empty string\n");
        failures++;
    }
    if (failures == 0)
        printf("ok: strutil\n");
    return failures != 0;
}
