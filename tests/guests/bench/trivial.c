/* Bench guest "trivial": prints a fixed checksum and exits at once. sevemu-bench cpu runs it
 * under QEMU to measure QEMU's own start-up and shut-down time, reported on its own row so a
 * reader can subtract it from the workloads' QEMU wall times. */
#include "guest.h"

int guest_main(void)
{
    guest_printf("checksum %016llx\n", 0ull);
    return 0;
}
