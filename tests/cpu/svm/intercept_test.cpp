// Intercept queries: the IOPM (APM vol 2 §15.10.1) and MSRPM (§15.11) read from DRAM, bit by bit
// at the boundaries; EXITINFO1 encodings (§15.10.2, §15.11); SEV-ES automatic exits (§15.35.5).
#include "svm_harness.h"

using namespace svmtest;

namespace {

void set_bit(Machine& m, uint64_t base, uint64_t bit)
{
    uint64_t at = base + bit / 8;
    m.put8(at, m.get(at, 1) | (1u << (bit % 8)));
}

GuestMode entered(Machine& m)
{
    SvmCpuView cpu = host_cpu();
    auto g = vmrun(*m.mc, cpu, HostContext {}, 0);
    REQUIRE(g.has_value());
    return *g;
}

} // namespace

TEST_CASE("IOPM: one bit per port, every byte of the access checked", "[svm][intercept]")
{
    Machine m;
    m.good_vmcb();
    auto io = [&](uint16_t port, unsigned size) { return iopm_intercepted(*m.mc, kIopmPa, port, size); };
    CHECK_FALSE(io(0x80, 1));
    set_bit(m, kIopmPa, 0x80);
    CHECK(io(0x80, 1));
    CHECK_FALSE(io(0x7F, 1));
    CHECK(io(0x7F, 2));  // touches 0x80
    CHECK(io(0x7D, 4));  // 7D..80
    CHECK_FALSE(io(0x7C, 4));
    CHECK_FALSE(io(0x81, 1));
    // port 0 and the last port
    set_bit(m, kIopmPa, 0);
    CHECK(io(0, 1));
    CHECK_FALSE(io(0xFFFF, 1));
    set_bit(m, kIopmPa, 0xFFFF); // byte 0x1FFF bit 7
    CHECK(m.get(kIopmPa + 0x1FFF, 1) == 0x80);
    CHECK(io(0xFFFF, 1));
    // A 4-byte access at FFFFh reaches bits 0x10000-0x10002: the third page of the 12 KiB map.
    m.zero_page(kIopmPa + 0x1000); // ports 8000h-FFFFh clear again
    CHECK_FALSE(io(0xFFFF, 4));
    set_bit(m, kIopmPa, 0x10002);
    CHECK(m.get(kIopmPa + 0x2000, 1) == 0x04);
    CHECK(io(0xFFFF, 4));        // FFFF, 10000, 10001, 10002
    CHECK_FALSE(io(0xFFFE, 4));  // FFFE .. 10001
    CHECK_FALSE(io(0xFFFF, 2));  // FFFF, 10000
    set_bit(m, kIopmPa, 0x10000);
    CHECK(io(0xFFFF, 2));
    // IOPM base bits 11:0 are ignored
    CHECK(iopm_intercepted(*m.mc, kIopmPa | 0xFFF, 0x80, 1));
}

TEST_CASE("IOPM through the guest's intercept state", "[svm][intercept]")
{
    Machine m;
    m.good_vmcb();
    set_bit(m, kIopmPa, 0x3F8);
    GuestMode g = entered(m);
    CHECK(g.io_intercepted(*m.mc, 0x3F8, 1));
    CHECK_FALSE(g.io_intercepted(*m.mc, 0x3F9, 1));
    g.control.intercepts[3] &= ~(1u << 27); // IOIO_PROT off: nothing intercepted
    CHECK_FALSE(g.io_intercepted(*m.mc, 0x3F8, 1));
}

TEST_CASE("MSRPM: three ranges, two bits per MSR", "[svm][intercept]")
{
    Machine m;
    m.good_vmcb();
    auto msr = [&](uint32_t n, bool w) { return msrpm_intercepted(*m.mc, kMsrpmPa, n, w); };
    CHECK_FALSE(msr(0, false));
    set_bit(m, kMsrpmPa, 0); // MSR 0 read
    CHECK(msr(0, false));
    CHECK_FALSE(msr(0, true));
    // MSR 0000_1FFF write: byte 0x7FF bit 7
    m.put8(kMsrpmPa + 0x7FF, 0x80);
    CHECK(msr(0x1FFF, true));
    CHECK_FALSE(msr(0x1FFF, false));
    // EFER C000_0080 read: 0x800 + 0x80*2/8 = 0x820 bit 0
    m.put8(kMsrpmPa + 0x820, 0x01);
    CHECK(msr(0xC0000080, false));
    CHECK_FALSE(msr(0xC0000080, true));
    // C000_0000 write: byte 0x800 bit 1
    m.put8(kMsrpmPa + 0x800, 0x02);
    CHECK(msr(0xC0000000, true));
    // C000_1FFF write: byte 0xFFF bit 7
    m.put8(kMsrpmPa + 0xFFF, 0x80);
    CHECK(msr(0xC0001FFF, true));
    // C001_0000 read: byte 0x1000 bit 0; C001_1FFF write: byte 0x17FF bit 7
    m.put8(kMsrpmPa + 0x1000, 0x01);
    m.put8(kMsrpmPa + 0x17FF, 0x80);
    CHECK(msr(0xC0010000, false));
    CHECK(msr(0xC0011FFF, true));
    CHECK_FALSE(msr(0xC0011FFF, false));
    // HWCR C001_0015 read: byte 0x1000 + 0x15*2/8 = 0x1005, bit (0x2A % 8) = 2
    CHECK_FALSE(msr(0xC0010015, false));
    m.put8(kMsrpmPa + 0x1005, 0x04);
    CHECK(msr(0xC0010015, false));
    // Outside the three ranges: always intercepted, whatever the map says.
    CHECK(msr(0x2000, false));
    CHECK(msr(0xBFFFFFFF, true));
    CHECK(msr(0xC0002000, false));
    CHECK(msr(0xC000FFFF, false));
    CHECK(msr(0xC0012000, true));
    CHECK(msr(0xFFFFFFFF, false));
}

TEST_CASE("MSRPM through the guest's intercept state, and other intercept words", "[svm][intercept]")
{
    Machine m;
    m.good_vmcb();
    m.put32(kVmcbPa + off::INTERCEPT_CR, (1u << 3) | (1u << (16 + 4)));  // CR3 read, CR4 write
    m.put32(kVmcbPa + off::INTERCEPT_DR, (1u << 7) | (1u << (16 + 7))); // DR7 read/write
    m.put32(kVmcbPa + off::INTERCEPT_EXC, (1u << 14) | (1u << 6));      // #PF, #UD
    m.put8(kMsrpmPa + 0x820, 0x02);                                       // EFER write
    GuestMode g = entered(m);
    CHECK(g.msr_intercepted(*m.mc, 0xC0000080, true));
    CHECK_FALSE(g.msr_intercepted(*m.mc, 0xC0000080, false));
    CHECK(g.msr_intercepted(*m.mc, 0x40000000, false)); // out of range
    CHECK(g.intercepts_cr_read(3));
    CHECK_FALSE(g.intercepts_cr_read(4));
    CHECK(g.intercepts_cr_write(4));
    CHECK_FALSE(g.intercepts_cr_write(3));
    CHECK(g.intercepts_dr_read(7));
    CHECK(g.intercepts_dr_write(7));
    CHECK_FALSE(g.intercepts_dr_read(6));
    CHECK(g.intercepts_exception(14));
    CHECK(g.intercepts_exception(6));
    CHECK_FALSE(g.intercepts_exception(13));
    CHECK_FALSE(g.intercepts_exception(200));
    CHECK_FALSE(g.intercepts_cr_read(99));
    CHECK(g.intercepts(Intercept::VMRUN));
    CHECK(g.intercepts(Intercept::MSR_PROT));
    g.control.intercepts[3] &= ~(1u << 28);
    CHECK_FALSE(g.msr_intercepted(*m.mc, 0x40000000, false));
}

TEST_CASE("EXITINFO1 for IOIO (APM vol 2 §15.10.2)", "[svm][intercept]")
{
    // IN AL, 0x80 in 64-bit code: TYPE=1, SZ8, A64, port 0x80; SEG is only for OUTS (KVM's
    // svm_check_intercept builds IN/OUT exit information without it).
    CHECK(ioio_exit_info_1(IoioInfo { 0x80, 1, true, false, false, 64, DS }) == 0x00800211ull);
    // OUT DX, EAX, port 0x3F8, 32-bit addressing: SZ32, A32.
    CHECK(ioio_exit_info_1(IoioInfo { 0x3F8, 4, false, false, false, 32, ES }) == ((0x3F8ull << 16) | 0x40 | 0x100));
    // REP OUTSW from FS, 16-bit addressing.
    CHECK(ioio_exit_info_1(IoioInfo { 0xFFFF, 2, false, true, true, 16, FS }) ==
          ((0xFFFFull << 16) | (4ull << 10) | 0x80 | 0x20 | 0x08 | 0x04));
    // Linux's decoding (SVM_IOIO_SIZE_SHIFT 4, SVM_IOIO_TYPE_MASK 1): size = (info >> 4) & 7.
    uint64_t i = ioio_exit_info_1(IoioInfo { 0x1F0, 2, true, true, true, 64, ES });
    CHECK(((i >> 4) & 7) == 2);
    CHECK((i & 1) == 1);
    CHECK((i >> 16) == 0x1F0);
    CHECK(msr_exit_info_1(false) == 0);
    CHECK(msr_exit_info_1(true) == 1);
    CHECK(mov_cr_exit_info_1(RBX) == 0x8000000000000003ull);
}

TEST_CASE("SEV-ES automatic exits (APM vol 2 §15.35)", "[svm][intercept][sev]")
{
    using namespace exitcode;
    for (uint64_t c : { SVM_EXIT_INTR, SVM_EXIT_NMI, SVM_EXIT_SMI, SVM_EXIT_INIT, SVM_EXIT_VINTR, SVM_EXIT_PAUSE,
                        SVM_EXIT_HLT, SVM_EXIT_SHUTDOWN, SVM_EXIT_EFER_WRITE_TRAP, SVM_EXIT_CR0_WRITE_TRAP,
                        SVM_EXIT_CR0_WRITE_TRAP + 15, SVM_EXIT_BUS_LOCK, SVM_EXIT_IDLE_HLT, SVM_EXIT_VMGEXIT,
                        SVM_EXIT_EXCP_BASE + 18, VMEXIT_INVALID, VMEXIT_BUSY, VMEXIT_INVALID_PMC })
        CHECK(is_automatic_exit(c, 0));
    for (uint64_t c : { SVM_EXIT_CPUID, SVM_EXIT_IOIO, SVM_EXIT_MSR, SVM_EXIT_VMMCALL, SVM_EXIT_RDTSC,
                        SVM_EXIT_RDTSCP, SVM_EXIT_READ_DR0 + 7, SVM_EXIT_WRITE_DR0 + 7, SVM_EXIT_EXCP_BASE + 1,
                        SVM_EXIT_WBINVD })
        CHECK_FALSE(is_automatic_exit(c, 0));
    CHECK(is_automatic_exit(SVM_EXIT_NPF, npf::P | npf::U | npf::GUEST_FINAL));
    CHECK_FALSE(is_automatic_exit(SVM_EXIT_NPF, npf::P | npf::RSVD | npf::GUEST_FINAL)); // MMIO: #VC
}
