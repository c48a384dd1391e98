/* Guest: the command line as a user drives it — -append, -initrd modules (Multiboot spec
 * §3.3 mods_*), and COM1 input read with receive-data interrupts (IRQ 4) while the CPU waits in
 * HLT. Prints what it got; guest-only, its known answer is QEMU's output (boot.expected) for
 *   -append "alpha beta=2" -initrd "boot-module.txt arg1 arg2" and stdin "\nsevemu rocks\n". The leading
 * empty line may be lost (the runtime's FIFO reset clears what the UART already received, on
 * QEMU and here alike) or kept and skipped: the output is the same either way. */
#include "guest.h"

extern const uint64_t isr_stub_table[48];
extern uint32_t mb_info;

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

struct Frame {
    uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax, vector, error, rip, cs, rflags, rsp, ss;
};

static struct {
    uint16_t offset_low, selector;
    uint8_t ist, type_attr;
    uint16_t offset_mid;
    uint32_t offset_high, zero;
} __attribute__((packed)) idt[48] __attribute__((aligned(16)));

static char line[128];
static volatile unsigned line_len;
static volatile int line_done, rx_irqs, other;

void isr_dispatch(struct Frame* f)
{
    if (f->vector == 0x24) {
        ++rx_irqs;
        while (inb(0x3F8 + 5) & 0x01) { /* LSR.DR: drain the receiver */
            char c = (char)inb(0x3F8);
            if (c == '\n' || c == '\r')
                line_done |= line_len > 0; /* empty lines are skipped */
            else if (!line_done && line_len < sizeof line - 1)
                line[line_len++] = c;
        }
        outb(0x20, 0x20);
        return;
    }
    ++other;
    if (f->vector >= 0x20)
        outb(0x20, 0x20);
}

static const char* after_space(const char* s)
{
    const char* p = strchr(s, ' ');
    return p ? p + 1 : "";
}

int guest_main(void)
{
    int failures = 0;
    const uint32_t* mbi = (const uint32_t*)(uintptr_t)mb_info;
    guest_printf("boot: command line, modules, serial input\n");
    guest_printf("append: '%s'\n", after_space((const char*)(uintptr_t)mbi[4]));
    guest_printf("modules: %u\n", mbi[5]);
    const uint32_t* mods = (const uint32_t*)(uintptr_t)mbi[6];
    for (uint32_t i = 0; i < mbi[5]; ++i) {
        uint32_t start = mods[4 * i], end = mods[4 * i + 1];
        guest_printf("module %u: args '%s', %u bytes, page aligned %s, text: ", i,
            after_space((const char*)(uintptr_t)mods[4 * i + 2]), end - start, start % 4096 ? "no" : "yes");
        for (const char* p = (const char*)(uintptr_t)start; p < (const char*)(uintptr_t)end; ++p)
            guest_putc(*p == '\n' ? '|' : *p);
        guest_printf("\n");
    }

    for (int v = 0; v < 48; ++v) {
        uint64_t a = isr_stub_table[v];
        idt[v].offset_low = (uint16_t)a;
        idt[v].selector = 0x18;
        idt[v].ist = 0;
        idt[v].type_attr = 0x8E;
        idt[v].offset_mid = (uint16_t)(a >> 16);
        idt[v].offset_high = (uint32_t)(a >> 32);
        idt[v].zero = 0;
    }
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idtr = { sizeof idt - 1, (uint64_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));

    /* PIC: vectors 0x20/0x28, only IRQ 4 unmasked; UART: RX-data interrupt, OUT2 on. */
    static const uint8_t pic_init[][2] = { { 0x20, 0x11 }, { 0xA0, 0x11 }, { 0x21, 0x20 }, { 0xA1, 0x28 },
        { 0x21, 0x04 }, { 0xA1, 0x02 }, { 0x21, 0x01 }, { 0xA1, 0x01 }, { 0x21, 0xEF }, { 0xA1, 0xFF } };
    for (unsigned i = 0; i < sizeof pic_init / sizeof pic_init[0]; ++i)
        outb(pic_init[i][0], pic_init[i][1]);
    outb(0x3F8 + 4, 0x0B);
    outb(0x3F8 + 1, 0x01);
    /* Test and sleep without a window: STI's interrupt shadow covers the HLT after it, so an
     * interrupt that arrives after the test wakes the HLT instead of being missed. */
    for (;;) {
        __asm__ volatile("cli");
        if (line_done)
            break;
        __asm__ volatile("sti; hlt");
    }
    outb(0x3F8 + 1, 0x00);
    guest_printf("input: '%s' (%u bytes), reversed: '", line, line_len);
    for (unsigned i = line_len; i-- > 0;)
        guest_putc(line[i]);
    guest_printf("', via %s\n", rx_irqs > 0 ? "RX interrupts" : "no interrupt");
    failures += rx_irqs == 0 || other != 0;
    guest_printf("boot: %s\n", failures ? "FAIL" : "PASS");
    return failures;
}
