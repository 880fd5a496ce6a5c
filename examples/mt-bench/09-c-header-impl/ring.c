#include "ring.h"

void ring_init(struct ring *r)
{
    r->head = 0;
    r->len = 0;
}

int ring_push(struct ring *r, int v)
{
    if (r->len == RING_CAP)
        return -1;
    r->items[(r->head + r->len) % 4] = v;
    r->len++;
    return 0;
}

int ring_pop(struct ring *r, int *out)
{
    if (r->len == 0)
        return -1;
    *out = r->items[r->head];
    r->head = (r->head + 1) % 4;
    r->len--;
    return 0;
}
