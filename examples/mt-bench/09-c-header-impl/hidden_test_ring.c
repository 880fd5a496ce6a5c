/* The benchmark's oracle (bench.yaml `check`); not part of the work packet. */
#include <stdio.h>

#include "ring.h"

#if RING_CAP != 8
#error "RING_CAP must be 8"
#endif

int main(void)
{
    struct ring r;
    int round, i, v, next_in = 0, next_out = 0, held = 0;

    ring_init(&r);
    /* many uneven rounds of pushes and pops, checked against a counter */
    for (round = 0; round < 200; round++) {
        int pushes = (round * 7) % 9, pops = (round * 5) % 9;
        for (i = 0; i < pushes; i++) {
            int want = held < RING_CAP ? 0 : -1;
            if (ring_push(&r, next_in) != want) {
                printf("FAIL: push in round %d\n", round);
                return 1;
            }
            if (want == 0) {
                next_in++;
                held++;
            }
        }
        for (i = 0; i < pops; i++) {
            if (held == 0) {
                if (ring_pop(&r, &v) != -1 || ring_peek(&r, &v) != -1) {
                    printf("FAIL: empty pop/peek in round %d\n", round);
                    return 1;
                }
                continue;
            }
            if (ring_peek(&r, &v) != 0 || v != next_out || ring_pop(&r, &v) != 0 || v != next_out) {
                printf("FAIL: pop in round %d: got %d, wanted %d\n", round, v, next_out);
                return 1;
            }
            next_out++;
            held--;
        }
    }
    printf("ok: hidden ring\n");
    return 0;
}
