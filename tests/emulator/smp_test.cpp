// The PC board around the vCPUs (emulator/machine.cpp): local APICs, the IOAPIC, -smp N with
// INIT-SIPI-SIPI, the reset lines, and snapshots of a 2-vCPU machine. Each test builds a machine
// with a bundled guest loaded (the Multiboot hand-off leaves vCPU 0 in 32-bit flat protected
// mode), writes a few hand-assembled instructions into RAM and points vCPU 0 at them; the
// guest ends through isa-debug-exit (status (V << 1) | 1) once it saw what it waited for. The
// expected behaviour is the architecture's (Intel SDM vol 3 §9.4.4 "MP Initialization Example",
// §11.6 ICR; APM vol 2 §16; 82093AA data sheet), not this emulator's output.
//
// Argument (compile-time): GUEST_DIR (tests/guests in the build tree).
#include "cpu/cpu.h"
#include "devices/ioapic.h"
#include "devices/lapic.h"
#include "emulator/machine.h"
#include "mmu/memory_controller.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

using namespace sevemu;
using namespace sevemu::emulator;

namespace {

constexpr uint32_t kBspCode = 0x20000, kApCode = 0x8000, kMarker = 0x9000, kIdt = 0x7000, kIdtr = 0x6FF0;
constexpr uint32_t kHandler = 0x21000;

MachineConfig config(uint32_t smp)
{
    MachineConfig c;
    c.memory_size = 64ull << 20;
    c.kernel = std::string(GUEST_DIR) + "/guest-hash.elf";
    c.smp = smp;
    c.debug_exit = devices::DebugExitConfig { 0xF4, 4 };
    c.serial.kind = SerialConfig::Kind::Callback;
    c.serial.callback = [](uint8_t) {};
    return c;
}

void poke(Machine& m, uint32_t addr, std::vector<uint8_t> const& bytes)
{
    REQUIRE(m.memory().write(Spa(addr), std::span(bytes), mmu::KeyId::none()).has_value());
}

uint32_t peek32(Machine& m, uint32_t addr)
{
    uint8_t b[4];
    REQUIRE(m.memory().read(Spa(addr), b, mmu::KeyId::none()).has_value());
    uint32_t v;
    std::memcpy(&v, b, 4);
    return v;
}

// mov dword [addr], imm32
void mov_mem(std::vector<uint8_t>& code, uint32_t addr, uint32_t imm)
{
    code.insert(code.end(), { 0xC7, 0x05 });
    for (uint32_t v : { addr, imm })
        for (int i = 0; i < 4; ++i)
            code.push_back(uint8_t(v >> (8 * i)));
}

// Points vCPU 0 at `code` (at kBspCode) and installs an IDT whose `vector` gate leads to a
// handler that exits with `value` through isa-debug-exit.
void start_bsp(Machine& m, std::vector<uint8_t> const& code, uint8_t vector = 0, uint8_t value = 0)
{
    poke(m, kBspCode, code);
    if (vector) {
        std::vector<uint8_t> gate = { uint8_t(kHandler), uint8_t(kHandler >> 8), 0x08, 0x00, 0x00, 0x8E,
            uint8_t(kHandler >> 16), uint8_t(kHandler >> 24) };
        poke(m, kIdt + vector * 8, gate);
        uint16_t limit = 0x7FF;
        poke(m, kIdtr, { uint8_t(limit), uint8_t(limit >> 8), uint8_t(kIdt), uint8_t(kIdt >> 8), uint8_t(kIdt >> 16), 0 });
        poke(m, kHandler, { 0xB0, value, 0xE6, 0xF4 }); // mov al, value; out 0xF4, al
    }
    auto s = m.cpu().state();
    s.rip = kBspCode;
    m.cpu().set_state(s);
    m.cpu().flush_code_cache();
}

// The AP's real-mode trampoline: DS = 0, [0x9000] = 0x12345678, then cli; hlt forever.
void put_trampoline(Machine& m)
{
    poke(m, kApCode, { 0xB8, 0x00, 0x00, 0x8E, 0xD8, 0x66, 0xC7, 0x06, 0x00, 0x90, 0x78, 0x56, 0x34, 0x12, 0xFA, 0xF4, 0xEB, 0xFD });
}

// Spin until [0x9000] holds the AP's marker, then exit with 0x21 (status 67).
void wait_marker_and_exit(std::vector<uint8_t>& code)
{
    code.insert(code.end(), { 0x81, 0x3D, 0x00, 0x90, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12, 0x75, 0xF4 });
    code.insert(code.end(), { 0xB0, 0x21, 0xE6, 0xF4 });
}

std::vector<uint8_t> xapic_init_sipi_sipi()
{
    std::vector<uint8_t> code;
    mov_mem(code, 0xFEE000F0, 0x1FF);      // SVR: APIC software-enabled
    mov_mem(code, 0xFEE00310, 0x01000000); // ICR high: APIC ID 1
    mov_mem(code, 0xFEE00300, 0x00004500); // INIT, level assert
    mov_mem(code, 0xFEE00300, 0x00004608); // SIPI, vector 8: CS = 0x0800
    mov_mem(code, 0xFEE00300, 0x00004608); // the second SIPI (ignored: the AP already started)
    wait_marker_and_exit(code);
    return code;
}

} // namespace

TEST_CASE("smp: an AP waits for SIPI; INIT-SIPI-SIPI through the xAPIC ICR starts it in real mode")
{
    auto m = Machine::create(config(2));
    REQUIRE(m.has_value());
    auto& machine = **m;
    REQUIRE(machine.vcpus().size() == 2);
    CHECK(machine.lapic(1).waiting_for_sipi());
    CHECK_FALSE(machine.lapic(0).waiting_for_sipi());
    CHECK(machine.lapic(1).apic_id() == 1);
    // CPUID 1 EBX[31:24] is each vCPU's APIC ID, and both count 2 logical processors.
    CHECK(machine.vcpus()[1].cpu().cpuid(1, 0).ebx >> 24 == 1);
    CHECK(((machine.vcpus()[0].cpu().cpuid(1, 0).ebx >> 16) & 0xFF) == 2);
    put_trampoline(machine);
    start_bsp(machine, xapic_init_sipi_sipi());
    auto out = machine.run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 67);
    CHECK(peek32(machine, kMarker) == 0x12345678);
    auto ap = machine.vcpus()[1].cpu().state();
    CHECK(ap.seg[cpu::CS].selector == 0x0800);
    CHECK(ap.seg[cpu::CS].base == 0x8000);
    CHECK(ap.halted);
    CHECK(ap.rip == 0x10); // after the HLT at 0x800:0x0F
}

TEST_CASE("smp: without a SIPI the AP never runs")
{
    auto m = Machine::create(config(2));
    REQUIRE(m.has_value());
    auto& machine = **m;
    put_trampoline(machine);
    std::vector<uint8_t> code = { 0xFA, 0xF4 }; // cli; hlt
    start_bsp(machine, code);
    auto out = machine.run();
    CHECK(out.reason == RunOutcome::Reason::HaltedForever);
    CHECK(peek32(machine, kMarker) != 0x12345678);
    CHECK(machine.vcpus()[1].instructions() == 0);
}

TEST_CASE("smp: INIT-SIPI-SIPI through the x2APIC ICR MSR")
{
    auto m = Machine::create(config(2));
    REQUIRE(m.has_value());
    auto& machine = **m;
    // CPUID 1 ECX advertises x2APIC (bit 21) and TSC-deadline (bit 24).
    CHECK((machine.cpu().cpuid(1, 0).ecx & (1u << 21)) != 0);
    CHECK((machine.cpu().cpuid(1, 0).ecx & (1u << 24)) != 0);
    put_trampoline(machine);
    std::vector<uint8_t> code = {
        0xB9, 0x1B, 0x00, 0x00, 0x00, // mov ecx, 0x1B (APIC_BASE)
        0x0F, 0x32,                   // rdmsr
        0x0D, 0x00, 0x0C, 0x00, 0x00, // or eax, EN | EXTD
        0x0F, 0x30,                   // wrmsr: x2APIC mode
        0xB9, 0x0F, 0x08, 0x00, 0x00, // mov ecx, 0x80F (SVR)
        0xB8, 0xFF, 0x01, 0x00, 0x00, // mov eax, 0x1FF
        0x31, 0xD2,                   // xor edx, edx
        0x0F, 0x30,                   // wrmsr
        0xB9, 0x30, 0x08, 0x00, 0x00, // mov ecx, 0x830 (ICR)
        0xBA, 0x01, 0x00, 0x00, 0x00, // mov edx, 1 (destination: x2APIC ID 1)
        0xB8, 0x00, 0x45, 0x00, 0x00, // mov eax, INIT assert
        0x0F, 0x30,                   // wrmsr
        0xB8, 0x08, 0x46, 0x00, 0x00, // mov eax, SIPI vector 8
        0x0F, 0x30,                   // wrmsr
        0x0F, 0x30,                   // wrmsr (second SIPI)
    };
    wait_marker_and_exit(code);
    start_bsp(machine, code);
    auto out = machine.run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 67);
    CHECK(peek32(machine, kMarker) == 0x12345678);
    CHECK(machine.lapic(0).x2apic());
}

TEST_CASE("smp: a LAPIC one-shot timer interrupt wakes a halted vCPU")
{
    auto m = Machine::create(config(1));
    REQUIRE(m.has_value());
    auto& machine = **m;
    std::vector<uint8_t> code = { 0x0F, 0x01, 0x1D, uint8_t(kIdtr), uint8_t(kIdtr >> 8), 0x00, 0x00 }; // lidt [kIdtr]
    mov_mem(code, 0xFEE000F0, 0x1FF);
    mov_mem(code, 0xFEE003E0, 0x0B);   // divide by 1
    mov_mem(code, 0xFEE00320, 0x40);   // LVT timer: one-shot, vector 0x40
    mov_mem(code, 0xFEE00380, 100000); // 100 µs at the 1 GHz timer clock
    code.insert(code.end(), { 0xFB, 0xF4, 0xEB, 0xFD }); // sti; hlt; jmp hlt
    start_bsp(machine, code, 0x40, 0x42);
    int64_t before = machine.now_ns();
    auto out = machine.run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 0x85);
    // The halted machine skipped ahead to the timer's expiry, and not beyond it.
    CHECK(machine.now_ns() >= before + 100000);
    CHECK(machine.now_ns() < before + 100000 + 1000);
}

TEST_CASE("smp: the PIT's IRQ 0 reaches the vCPU through IOAPIC pin 2 with the 8259 path masked")
{
    auto m = Machine::create(config(1));
    REQUIRE(m.has_value());
    auto& machine = **m;
    std::vector<uint8_t> code = { 0x0F, 0x01, 0x1D, uint8_t(kIdtr), uint8_t(kIdtr >> 8), 0x00, 0x00 };
    mov_mem(code, 0xFEE000F0, 0x1FF);
    mov_mem(code, 0xFEE00350, 0x10000); // LVT0 (ExtINT) masked: no 8259 interrupt gets through
    mov_mem(code, 0xFEC00000, 0x14);    // IOREGSEL: redirection entry 2, low
    mov_mem(code, 0xFEC00010, 0x41);    // vector 0x41, fixed, physical, edge, unmasked
    mov_mem(code, 0xFEC00000, 0x15);
    mov_mem(code, 0xFEC00010, 0x00);    // destination APIC ID 0
    code.insert(code.end(), { 0xB0, 0x34, 0xE6, 0x43, 0xB0, 0xA9, 0xE6, 0x40, 0xB0, 0x04, 0xE6, 0x40 }); // PIT ch0 mode 2, 1193
    code.insert(code.end(), { 0xFB, 0xF4, 0xEB, 0xFD });
    start_bsp(machine, code, 0x41, 0x43);
    auto out = machine.run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 0x87);
    CHECK((machine.ioapic().entry(2) & 0xFF) == 0x41);
}

TEST_CASE("smp: the i8042 reset line (0xFE to port 0x64) and 0xCF9 reset the machine; -no-reboot ends the run")
{
    for (auto [port_code, name] : std::initializer_list<std::pair<std::vector<uint8_t>, char const*>> {
             { { 0xB0, 0xFE, 0xE6, 0x64 }, "i8042" },
             { { 0xB0, 0x06, 0xBA, 0xF9, 0x0C, 0x00, 0x00, 0xEE }, "cf9" } }) { // mov al,6; mov edx,0xCF9; out dx,al
        INFO(name);
        auto c = config(1);
        c.no_reboot = true;
        auto m = Machine::create(c);
        REQUIRE(m.has_value());
        auto code = port_code;
        code.insert(code.end(), { 0xFA, 0xF4 }); // never reached
        start_bsp(**m, code);
        auto out = (*m)->run();
        CHECK(out.reason == RunOutcome::Reason::ResetShutdown);
        CHECK(out.exit_status == 0);

        // Without -no-reboot the machine resets and boots -kernel again: the bundled guest then
        // runs to its own end, as an untouched machine's does.
        auto plain = Machine::create(config(1));
        REQUIRE(plain.has_value());
        auto want = (*plain)->run();
        auto m2 = Machine::create(config(1));
        REQUIRE(m2.has_value());
        start_bsp(**m2, code);
        auto again = (*m2)->run();
        CHECK(again.reason == want.reason);
        CHECK(again.exit_status == want.exit_status);
        CHECK(again.instructions > want.instructions);
    }
}

TEST_CASE("smp: a 2-vCPU machine saved mid-run and restored finishes exactly as an uninterrupted run")
{
    // The BSP starts the AP, then both count: the AP to 300000 in [0x9004] before writing the
    // marker; the BSP spins on the marker, counting its iterations in EBX, and exits with the
    // low bits of the count (so the interleaving shows in the status).
    auto prepare = [](Machine& m) {
        poke(m, kApCode, { 0xB8, 0x00, 0x00, 0x8E, 0xD8,     // mov ax, 0; mov ds, ax
                               0x66, 0xFF, 0x06, 0x04, 0x90, // inc dword [0x9004]
                               0x66, 0x81, 0x3E, 0x04, 0x90, 0xE0, 0x93, 0x04, 0x00, // cmp dword [0x9004], 300000
                               0x75, 0xF0,                   // jne inc
                               0x66, 0xC7, 0x06, 0x00, 0x90, 0x78, 0x56, 0x34, 0x12, 0xFA, 0xF4, 0xEB, 0xFD });
        std::vector<uint8_t> code;
        mov_mem(code, 0xFEE000F0, 0x1FF);
        mov_mem(code, 0xFEE00310, 0x01000000);
        mov_mem(code, 0xFEE00300, 0x00004500);
        mov_mem(code, 0xFEE00300, 0x00004608);
        code.insert(code.end(), { 0x31, 0xDB,                                                 // xor ebx, ebx
                                    0x43,                                                     // inc ebx
                                    0x81, 0x3D, 0x00, 0x90, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12, // cmp [0x9000], marker
                                    0x75, 0xF3,                                               // jne inc
                                    0x88, 0xD8, 0x24, 0x7F, 0xE6, 0xF4 });                    // mov al, bl; and al, 0x7F; out
        start_bsp(m, code);
    };
    auto whole = Machine::create(config(2));
    REQUIRE(whole.has_value());
    prepare(**whole);
    auto want = (*whole)->run();
    INFO(want.message);
    REQUIRE(want.reason == RunOutcome::Reason::DebugExit);
    uint32_t want_ebx = uint32_t((*whole)->cpu().gpr(cpu::RBX));
    CHECK(want_ebx > 1000); // the BSP really did wait for the AP

    for (uint64_t cut : { 150'000ull, 450'000ull }) {
        INFO("cut at " << cut);
        auto c = config(2);
        c.max_instructions = cut;
        auto first = Machine::create(c);
        REQUIRE(first.has_value());
        prepare(**first);
        auto stopped = (*first)->run();
        REQUIRE(stopped.reason == RunOutcome::Reason::InstructionLimit);
        auto snap = (*first)->save_snapshot();
        INFO((snap ? "" : snap.error().message));
        REQUIRE(snap.has_value());

        auto ic = config(2);
        ic.kernel.clear();
        auto second = Machine::create_incoming(ic);
        REQUIRE(second.has_value());
        auto loaded = (*second)->load_snapshot(*snap);
        INFO((loaded ? "" : loaded.error().message));
        REQUIRE(loaded.has_value());
        auto out = (*second)->run();
        CHECK(out.reason == want.reason);
        CHECK(out.exit_status == want.exit_status);
        CHECK(stopped.instructions + out.instructions == want.instructions);
        CHECK(uint32_t((*second)->cpu().gpr(cpu::RBX)) == want_ebx);
        CHECK((*second)->now_ns() == (*whole)->now_ns());

        // A 1-vCPU machine refuses the 2-vCPU snapshot, naming the count.
        auto one = config(1);
        one.kernel.clear();
        auto third = Machine::create_incoming(one);
        REQUIRE(third.has_value());
        auto refused = (*third)->load_snapshot(*snap);
        REQUIRE_FALSE(refused.has_value());
        CHECK(refused.error().message.find("2 vCPU(s)") != std::string::npos);
    }
}

TEST_CASE("smp: a halted vCPU does not stop the others; its LAPIC timer wakes it while the AP runs")
{
    auto m = Machine::create(config(2));
    REQUIRE(m.has_value());
    auto& machine = **m;
    poke(machine, kApCode, { 0xEB, 0xFE }); // the AP spins: jmp $
    std::vector<uint8_t> code = { 0x0F, 0x01, 0x1D, uint8_t(kIdtr), uint8_t(kIdtr >> 8), 0x00, 0x00 };
    mov_mem(code, 0xFEE000F0, 0x1FF);
    mov_mem(code, 0xFEE00310, 0x01000000);
    mov_mem(code, 0xFEE00300, 0x00004500);
    mov_mem(code, 0xFEE00300, 0x00004608);
    mov_mem(code, 0xFEE003E0, 0x0B);
    mov_mem(code, 0xFEE00320, 0x40);
    mov_mem(code, 0xFEE00380, 1'000'000); // 1 ms
    code.insert(code.end(), { 0xFB, 0xF4, 0xEB, 0xFD });
    start_bsp(machine, code, 0x40, 0x42);
    auto out = machine.run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 0x85);
    // The BSP slept 1 ms of virtual time; the AP ran through it (no skip-ahead: it was
    // runnable): the clock is every vCPU's instructions, here almost all the AP's. The BSP's
    // slice-ending writes (ICR, LVT timer, initial count) let the AP run a quantum each before
    // the timer started: at most 4 quanta.
    uint64_t ap = machine.vcpus()[1].instructions();
    CHECK(ap >= 1'000'000 - 1000);
    CHECK(machine.now_ns() >= 1'000'000);
    CHECK(machine.now_ns() <= 1'000'000 + 4 * Machine::kSmpQuantum + 1000);
    CHECK(uint64_t(machine.now_ns()) == ap + machine.vcpus()[0].instructions()); // no skip-ahead
    CHECK(machine.vcpus()[0].instructions() < 1000);
    // Both TSCs followed the one clock.
    CHECK(machine.vcpus()[0].cpu().tsc() == machine.vcpus()[1].cpu().tsc());
}

TEST_CASE("smp: code one vCPU rewrites is re-decoded by the other (cross-modifying code)")
{
    auto c = config(2);
    c.max_instructions = 20'000'000; // without coherence the AP spins forever: a clear failure
    auto m = Machine::create(c);
    REQUIRE(m.has_value());
    auto& machine = **m;
    // The AP spins on `jmp $` at 0x8005 until the BSP turns it into `jmp +0`; it then writes the
    // marker and halts.
    poke(machine, kApCode, { 0xB8, 0x00, 0x00, 0x8E, 0xD8, 0xEB, 0xFE, 0x66, 0xC7, 0x06, 0x00, 0x90, 0x78, 0x56, 0x34, 0x12, 0xFA,
                               0xF4, 0xEB, 0xFD });
    std::vector<uint8_t> code;
    mov_mem(code, 0xFEE000F0, 0x1FF);
    mov_mem(code, 0xFEE00310, 0x01000000);
    mov_mem(code, 0xFEE00300, 0x00004500);
    mov_mem(code, 0xFEE00300, 0x00004608);
    // Let the AP spin a while (its loop is decoded and cached by then): ecx = 300000; loop $.
    code.insert(code.end(), { 0xB9, 0xE0, 0x93, 0x04, 0x00, 0xE2, 0xFE });
    code.insert(code.end(), { 0xC6, 0x05, 0x06, 0x80, 0x00, 0x00, 0x00 }); // mov byte [0x8006], 0: jmp +0
    wait_marker_and_exit(code);
    start_bsp(machine, code);
    auto out = machine.run();
    INFO(out.message);
    CHECK(out.reason == RunOutcome::Reason::DebugExit);
    CHECK(out.exit_status == 67);
    CHECK(machine.vcpus()[1].cpu().stats().code_invalidations > 0);
}
