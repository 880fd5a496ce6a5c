#include <stdio.h>

#include "ring.h"

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
    struct ring r;
    int i, v = -1, ok = 1;

    ring_init(&r);
    check(ring_peek(&r, &v) == -1, "peek on an empty ring fails");
    for (i = 0; i < 8; i++)
        ok &= ring_push(&r, i) == 0;
    check(ok, "the ring holds 8 items");
    check(ring_push(&r, 99) == -1, "a ninth item is refused");
    check(ring_peek(&r, &v) == 0 && v == 0, "peek shows the front item");
    check(ring_peek(&r, &v) == 0 && v == 0, "peek does not remove it");

    /* wrap around: take 3 out, put 3 in, and everything comes out in order */
    for (i = 0; i < 3; i++)
        ok &= ring_pop(&r, &v) == 0 && v == i;
    for (i = 8; i < 11; i++)
        ok &= ring_push(&r, i) == 0;
    for (i = 3; i < 11; i++)
        ok &= ring_pop(&r, &v) == 0 && v == i;
    check(ok, "items come out in order after wrapping around");
    check(ring_pop(&r, &v) == -1, "pop on an empty ring fails");

    if (failures == 0)
        printf("ok: ring\n");
    return failures != 0;
}
