/* Guest: exceptions and interrupts, end to end — an IDT in long mode; #DE, #BP, #UD, #GP and
 * #PF delivered with the right vector, error code, CR2 and return address; the 8259 PIC pair
 * and the 8254 PIT (mode 2, 1 kHz) waking HLT; the 16550A THRE interrupt through IRQ 4; CMOS
 * RTC registers; the Multiboot command line and memory map. Runs only as a guest: its known answer is QEMU's
 * output for the same image (tests/guests/irq.expected). */
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
    uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};

struct IdtEntry {
    uint16_t offset_low, selector;
    uint8_t ist, type_attr;
    uint16_t offset_mid;
    uint32_t offset_high, zero;
} __attribute__((packed));

static struct IdtEntry idt[48] __attribute__((aligned(16)));

static volatile uint64_t last_vector = ~0ull, last_error, last_cr2, last_rip;
static volatile int skip_bytes;
static volatile uint32_t timer_ticks, uart_irqs, spurious;
static volatile uint8_t uart_iir;

void isr_dispatch(struct Frame* f)
{
    if (f->vector < 32) {
        last_vector = f->vector;
        last_error = f->error;
        last_rip = f->rip;
        if (f->vector == 14) {
            uint64_t cr2;
            __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
            last_cr2 = cr2;
        }
        f->rip += (uint64_t)skip_bytes; /* resume after the faulting instruction (a trap: 0) */
        return;
    }
    switch (f->vector) {
    case 0x20:
        ++timer_ticks;
        outb(0x20, 0x20); /* EOI */
        break;
    case 0x24:
        ++uart_irqs;
        uart_iir = inb(0x3F8 + 2);
        outb(0x3F8 + 1, 0x00); /* IER off: no more THRE interrupts */
        outb(0x20, 0x20);
        break;
    default:
        ++spurious;
        if (f->vector >= 0x28)
            outb(0xA0, 0x20);
        outb(0x20, 0x20);
    }
}

static void idt_install(void)
{
    for (int v = 0; v < 48; ++v) {
        uint64_t a = isr_stub_table[v];
        idt[v].offset_low = (uint16_t)a;
        idt[v].selector = 0x18; /* the entry's 64-bit code segment */
        idt[v].ist = 0;
        idt[v].type_attr = 0x8E; /* present, DPL 0, 64-bit interrupt gate */
        idt[v].offset_mid = (uint16_t)(a >> 16);
        idt[v].offset_high = (uint32_t)(a >> 32);
        idt[v].zero = 0;
    }
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idtr = { sizeof idt - 1, (uint64_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

static void report(const char* what)
{
    guest_printf("%-6s vector %2llu error 0x%llx", what, (unsigned long long)last_vector, (unsigned long long)last_error);
    if (last_vector == 14)
        guest_printf(" cr2 0x%llx", (unsigned long long)last_cr2);
    guest_printf("\n");
    last_vector = ~0ull;
}

static int exceptions(void)
{
    int failures = 0;
    uint64_t expected_rip;

    /* #BP (a trap): the saved RIP is the instruction after INT3. */
    skip_bytes = 0;
    __asm__ volatile("lea 1f(%%rip), %0\n\tint3\n1:" : "=r"(expected_rip));
    failures += last_vector != 3 || last_rip != expected_rip;
    report("#BP");

    /* #UD (a fault): RIP points at UD2 (2 bytes). */
    skip_bytes = 2;
    __asm__ volatile("lea 1f(%%rip), %0\n1:\tud2" : "=r"(expected_rip));
    failures += last_vector != 6 || last_rip != expected_rip;
    report("#UD");

    /* #DE: DIV by zero (48 f7 f1, 3 bytes). */
    skip_bytes = 3;
    __asm__ volatile("xor %%ecx, %%ecx\n\tmov $1, %%eax\n\txor %%edx, %%edx\n\t.byte 0x48, 0xf7, 0xf1"
                     :
                     :
                     : "rax", "rcx", "rdx");
    failures += last_vector != 0;
    report("#DE");

    /* #GP(0): a non-canonical address (48 8b 10 = mov (%rax), %rdx). */
    skip_bytes = 3;
    __asm__ volatile("movabs $0x8000000000000000, %%rax\n\t.byte 0x48, 0x8b, 0x10" : : : "rax", "rdx");
    failures += last_vector != 13 || last_error != 0;
    report("#GP");

    /* #PF: read of an unmapped address (beyond the 1 GiB identity map): error 0, CR2 set. */
    skip_bytes = 3;
    __asm__ volatile("mov $0x40001238, %%eax\n\t.byte 0x48, 0x8b, 0x10" : : : "rax", "rdx");
    failures += last_vector != 14 || last_error != 0 || last_cr2 != 0x40001238;
    report("#PF");

    /* #PF on a write: error code bit 1 (W). */
    skip_bytes = 3;
    __asm__ volatile("mov $0x7FFFF000, %%eax\n\t.byte 0x48, 0x89, 0x10" : : : "rax", "rdx");
    failures += last_vector != 14 || last_error != 2;
    report("#PF(W)");
    return failures;
}

static void pic_init(uint8_t master_mask, uint8_t slave_mask)
{
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    outb(0x21, 0x20);
    outb(0xA1, 0x28);
    outb(0x21, 0x04);
    outb(0xA1, 0x02);
    outb(0x21, 0x01);
    outb(0xA1, 0x01);
    outb(0x21, master_mask);
    outb(0xA1, slave_mask);
}

static int interrupts(void)
{
    int failures = 0;
    pic_init(0xFE, 0xFF); /* IRQ 0 only */
    /* PIT channel 0, mode 2, 1 kHz. */
    outb(0x43, 0x34);
    outb(0x40, 1193 & 0xFF);
    outb(0x40, 1193 >> 8);
    __asm__ volatile("sti");
    while (timer_ticks < 20)
        __asm__ volatile("hlt");
    __asm__ volatile("cli");
    guest_printf("timer: %s20 ticks via IRQ 0 / vector 0x20\n", timer_ticks >= 20 ? ">= " : "< ");
    outb(0x20, 0x0B);
    guest_printf("pic: ISR after EOI %02x, IMR %02x\n", inb(0x20), inb(0x21));
    /* Stop the PIT: mode 0 with a count that never ends before we mask it. */
    outb(0x43, 0x30);
    outb(0x40, 0xFF);
    outb(0x40, 0xFF);

    /* UART THRE interrupt on IRQ 4 (enabling ETBEI with THR empty raises it). */
    outb(0x21, 0xEF);
    outb(0x3F8 + 4, 0x0B); /* OUT2: the PC's IRQ gate */
    __asm__ volatile("sti");
    outb(0x3F8 + 1, 0x02);
    for (int i = 0; i < 1000 && !uart_irqs; ++i)
        __asm__ volatile("pause");
    __asm__ volatile("cli");
    guest_printf("uart: %u THRE interrupt(s), IIR %02x\n", uart_irqs, uart_iir);
    failures += uart_irqs != 1 || (uart_iir & 0x0F) != 0x02;
    outb(0x21, 0xFF);
    guest_printf("spurious: %u\n", spurious);
    return failures + (timer_ticks < 20);
}

static uint8_t cmos(uint8_t reg)
{
    outb(0x70, 0x80 | reg);
    return inb(0x71);
}

int guest_main(void)
{
    int failures = 0;
    guest_printf("irq: exceptions, PIC, PIT, UART interrupt, CMOS\n");
    idt_install();
    failures += exceptions();
    failures += interrupts();
    guest_printf("cmos: regB %02x regD %02x ext16M %02x%02x\n", cmos(0x0B), cmos(0x0D), cmos(0x35), cmos(0x34));
    /* QEMU's Multiboot command line is "KERNEL-PATH APPEND": print what follows the path. */
    const uint32_t* mbi = (const uint32_t*)(uintptr_t)mb_info;
    const char* cmdline = (const char*)(uintptr_t)mbi[4];
    const char* space = strchr(cmdline, ' ');
    /* The image is guest-irq.elf, or guest-irq-sev.elf for the SEV build of the same core. */
    int names_kernel = space && ((space - cmdline >= 13 && strncmp(space - 13, "guest-irq.elf", 13) == 0)
        || (space - cmdline >= 17 && strncmp(space - 17, "guest-irq-sev.elf", 17) == 0));
    guest_printf("multiboot: flags %03x, cmdline names the kernel: %s, append '%s', mem_lower %u, mem_upper %u\n",
        mbi[0], names_kernel ? "yes" : "no", space ? space + 1 : "", mbi[1], mbi[2]);
    failures += !names_kernel;
    /* The memory map (Multiboot spec §3.3: size, base_addr, length, type). */
    const uint8_t* p = (const uint8_t*)(uintptr_t)mbi[12];
    for (const uint8_t* end = p + mbi[11]; p < end; p += *(const uint32_t*)p + 4)
        guest_printf("mmap: %016llx +%016llx type %u\n", (unsigned long long)*(const uint64_t*)(p + 4),
            (unsigned long long)*(const uint64_t*)(p + 12), *(const uint32_t*)(p + 20));
    guest_printf("irq: %s\n", failures ? "FAIL" : "PASS");
    return failures;
}
