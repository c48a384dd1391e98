/* sevemu test guests — the host side: stdout and exit status; libc provides the rest. */
#include "guest.h"

#include <stdio.h>

void guest_putc(char c) { putchar(c); }

int main(void)
{
    int rc = guest_main();
    fflush(stdout);
    return rc;
}
