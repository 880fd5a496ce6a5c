#ifndef RING_H
#define RING_H

/* How many items a ring holds. */
#define RING_CAP 4

/* A fixed-size FIFO queue of ints. */
struct ring {
    int items[RING_CAP];
    int head; /* index of the oldest item */
    int len;  /* number of items held */
};

void ring_init(struct ring *r);

/* Adds v at the back; returns 0, or -1 when the ring is full. */
int ring_push(struct ring *r, int v);

/* Removes the front item into *out; returns 0, or -1 when the ring is empty. */
int ring_pop(struct ring *r, int *out);

#endif
