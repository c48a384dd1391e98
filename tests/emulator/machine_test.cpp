// Machine: building from a MachineConfig (validation errors as values), the PC memory map, the
// Multiboot hand-off state (QEMU's option ROM state), and a whole guest run to isa-debug-exit.
#include "cpu/cpu.h"
#include "devices/lapic.h"
#include "devices/pic8259.h"
#include "devices/uart16550.h"
#include "emulator/machine.h"
#include "mmu/memory_controller.h"
#include "tests/emulator/synthetic_linux.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <string>

using namespace sevemu;
using namespace sevemu::emulator;

namespace {

std::string guest_path(std::string const& name)
{
    char const* root = std::getenv("SEVEMU_BUILD_ROOT");
    return std::string(root ? root : ".") + "/tests/guests/guest-" + name + ".elf";
}

MachineConfig base_config(std::string* serial_out = nullptr)
{
    MachineConfig c;
    c.memory_size = 64ull << 20;
    c.kernel = guest_path("hash-nosse");
    if (serial_out) {
        c.serial.kind = SerialConfig::Kind::Callback;
        c.serial.callback = [serial_out](uint8_t b) { serial_out->push_back(char(b)); };
    }
    c.debug_exit = devices::DebugExitConfig { 0xF4, 4 };
    return c;
}

std::string error_of(MachineConfig c)
{
    auto m = Machine::create(std::move(c));
    REQUIRE_FALSE(m.has_value());
    return m.error().message;
}

} // namespace

TEST_CASE("machine: the Multiboot hand-off is QEMU's option-ROM state")
{
    auto m = Machine::create(base_config());
    REQUIRE(m.has_value());
    auto& machine = **m;
    auto st = machine.cpu().state();
    REQUIRE(machine.multiboot().has_value());
    CHECK(st.rip == machine.multiboot()->entry);
    CHECK(st.gpr[cpu::RAX] == 0x2BADB002);
    CHECK(st.gpr[cpu::RBX] == 0x9500);
    CHECK(st.gpr[cpu::RCX] == machine.multiboot()->entry);
    CHECK((st.cr0 & cpu::cr0::PE) != 0);
    CHECK((st.cr0 & cpu::cr0::PG) == 0);
    CHECK((st.rflags & cpu::rflags::IF) == 0);
    CHECK(st.seg[cpu::CS].selector == 0x08);
    CHECK(st.seg[cpu::DS].selector == 0x10);
    CHECK(st.gdtr.base == kMultibootGdtAddr);
    CHECK(st.gdtr.limit == kMultibootGdtLimit);
    uint8_t flags[4];
    REQUIRE(machine.memory().read(Spa(0x9500), flags, mmu::KeyId::none()).has_value());
    CHECK(flags[0] == 0x4F);
    CHECK(machine.multiboot()->mem_upper_kib == (64u << 10) - 1024 - 128); // QEMU + SeaBIOS: 128 KiB kept
}

TEST_CASE("machine: PC memory map as QEMU with SeaBIOS reports it")
{
    auto m = Machine::create(base_config());
    REQUIRE(m.has_value());
    auto const& map = (*m)->memory_map();
    // QEMU 7.2 -m 64M: the same seven entries, in this order.
    std::vector<E820Entry> want = {
        { 0, 0x9FC00, 1 },
        { 0x9FC00, 0x400, 2 },
        { 0xF0000, 0x10000, 2 },
        { 0x100000, (64ull << 20) - 0x100000 - 0x20000, 1 },
        { (64ull << 20) - 0x20000, 0x20000, 2 },
        { 0xFFFC0000, 0x40000, 2 },
        { 0xFD00000000, 0x300000000, 2 },
    };
    REQUIRE(map.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
        INFO("entry " << i);
        CHECK(map[i].base == want[i].base);
        CHECK(map[i].length == want[i].length);
        CHECK(map[i].type == want[i].type);
    }
}

TEST_CASE("machine: memory above 4 GiB appears in the map")
{
    auto c = base_config();
    c.memory_size = 4ull << 30;
    auto m = Machine::create(c);
    REQUIRE(m.has_value());
    bool high = false;
    for (auto const& e : (*m)->memory_map())
        high |= e.base == 0x100000000ull && e.length == (1ull << 30) && e.type == 1;
    CHECK(high);
    CHECK((*m)->multiboot()->mem_upper_kib == 3144576); // QEMU's value for -m 4G
}

TEST_CASE("machine: configuration errors are one-line values")
{
    auto c = base_config();
    c.smp = Machine::kMaxVcpus + 1;
    CHECK(error_of(c).find("-smp 65: unsupported: 1 to 64 vCPUs") != std::string::npos);
    c.smp = 0;
    CHECK(error_of(c).find("unsupported") != std::string::npos);
    c = base_config();
    c.memory_size = 1ull << 20;
    CHECK(error_of(c).find("too little") != std::string::npos);
    c = base_config();
    c.kernel = "/nonexistent/k.elf";
    CHECK(error_of(c).find("/nonexistent/k.elf") != std::string::npos);
    c = base_config();
    c.kernel.clear();
    CHECK(error_of(c).find("-kernel") != std::string::npos);
    c = base_config();
    c.debug_exit = devices::DebugExitConfig { 0x3FA, 4 };
    CHECK(error_of(c).find("com1") != std::string::npos);
    c = base_config();
    c.confidential_guest = SevGuestConfig { .type = SevGuestConfig::Type::SevSnp, .id = "sev0" };
    CHECK(error_of(c).find("unsupported yet") != std::string::npos); // SEV guests: sev_machine_test.cpp
    c = base_config();
    c.memory_size = 2ull << 20; // the guest's bss does not fit below 2 MiB? It does: 1 MiB + ~100 KiB.
    CHECK(Machine::create(c).has_value());
}

TEST_CASE("machine: the device list, in order, each on the PC's ports; ISA lines reach the PIC through the router")
{
    auto m = Machine::create(base_config());
    REQUIRE(m.has_value());
    auto& machine = **m;
    std::vector<std::string> names;
    for (auto const& d : machine.devices()) {
        names.push_back(std::string(d.device->name()));
        for (auto const& p : d.placements) {
            // Every placement is what the bus finds at its base.
            auto hit = (p.space == Machine::DevicePlacement::Space::Pio ? machine.pio() : machine.mmio()).find(p.base);
            REQUIRE(hit.has_value());
            CHECK(hit->device == p.port);
            CHECK(hit->offset == 0);
        }
    }
    // The local APICs have no place on the shared buses: each vCPU decodes its own (machine_io.h).
    CHECK(names == std::vector<std::string> { "pic", "pit", "rtc", "acpi-pm", "com1", "post", "ioapic", "i8042",
        "pci-host", "lapic0", "debug-exit" });
    CHECK(machine.devices()[6].placements.front().space == Machine::DevicePlacement::Space::Mmio);
    CHECK(machine.devices()[6].placements.front().base == 0xFEC00000);
    CHECK(machine.devices().front().placements.size() == 3); // master, slave, ELCR

    // ISA IRQ 5 (edge) through the router: the PIC's IRR sees it, and with the line unmasked
    // (ICW1-4 at vector 0x20, OCW1 0) it is the interrupt the vCPU is offered.
    auto& pio = machine.pio();
    for (auto [port, v] : std::initializer_list<std::pair<uint16_t, uint8_t>> { { 0x20, 0x11 }, { 0x21, 0x20 }, { 0x21, 0x04 },
             { 0x21, 0x01 }, { 0x21, 0x00 } })
        pio.write(port, 1, v);
    CHECK_FALSE(machine.pic().interrupt_pending());
    machine.irq_router().isa_line(5).raise();
    CHECK((machine.pic().irr(false) & (1u << 5)) != 0);
    CHECK(machine.pic().interrupt_pending());
    CHECK(machine.pic().acknowledge() == 0x25);
}

TEST_CASE("machine: two machines share nothing")
{
    auto a = Machine::create(base_config());
    auto b = Machine::create(base_config());
    REQUIRE(a.has_value());
    REQUIRE(b.has_value());
    uint8_t x = 0x5A;
    REQUIRE((*a)->memory().write(Spa(0x500000), std::span(&x, 1), mmu::KeyId::none()).has_value());
    uint8_t y = 0;
    REQUIRE((*b)->memory().read(Spa(0x500000), std::span(&y, 1), mmu::KeyId::none()).has_value());
    CHECK(y == 0);
    CHECK(&(*a)->pio() != &(*b)->pio());
}

TEST_CASE("machine: a guest runs to isa-debug-exit")
{
    std::string out;
    auto c = base_config(&out);
    c.max_instructions = 2'000'000'000;
    auto m = Machine::create(std::move(c));
    REQUIRE(m.has_value());
    auto outcome = (*m)->run();
    INFO("serial: " << out);
    INFO("message: " << outcome.message);
    CHECK(outcome.reason == RunOutcome::Reason::DebugExit);
    CHECK(outcome.exit_status == 33);
    CHECK(out.find("hash: PASS") != std::string::npos);
}

// --- Run outcomes, with tiny hand-made Multiboot images (a.out kludge, code at load + 0x60).
#include <fstream>
#include <unistd.h>
#include <vector>

namespace {

std::string write_kernel(std::string const& name, std::vector<uint8_t> const& code)
{
    std::vector<uint8_t> f(0x100, 0);
    auto put32 = [&](size_t off, uint32_t v) {
        for (int i = 0; i < 4; ++i)
            f[off + i] = uint8_t(v >> (8 * i));
    };
    uint32_t flags = 1u << 16;
    put32(0x40, 0x1BADB002);
    put32(0x44, flags);
    put32(0x48, uint32_t(-(0x1BADB002 + flags)));
    put32(0x4C, 0x100040);
    put32(0x50, 0x100000);
    put32(0x54, 0x100100);
    put32(0x58, 0x101000);
    put32(0x5C, 0x100060);
    std::copy(code.begin(), code.end(), f.begin() + 0x60);
    std::string path = "/tmp/sevemu-machine-test-" + std::to_string(getpid()) + "-" + name;
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<char const*>(f.data()), long(f.size()));
    return path;
}

RunOutcome run_code(std::string const& name, std::vector<uint8_t> const& code, uint64_t limit = 1'000'000, bool no_reboot = false)
{
    MachineConfig c;
    c.no_reboot = no_reboot;
    c.memory_size = 16ull << 20;
    c.kernel = write_kernel(name, code);
    c.debug_exit = devices::DebugExitConfig { 0xF4, 4 };
    c.max_instructions = limit;
    auto m = Machine::create(c);
    if (!m)
        std::remove(c.kernel.c_str());
    REQUIRE(m.has_value());
    auto out = (*m)->run(); // a reboot loads -kernel again
    std::remove(c.kernel.c_str());
    return out;
}

} // namespace

TEST_CASE("machine: run outcomes and their exit statuses")
{
    // mov al, 0x2a; out 0xf4, al  ->  (0x2a << 1) | 1
    auto exit = run_code("exit", { 0xB0, 0x2A, 0xE6, 0xF4, 0xEB, 0xFE });
    CHECK(exit.reason == RunOutcome::Reason::DebugExit);
    CHECK(exit.exit_status == 85);
    CHECK(exit.message.empty());

    // cli; hlt  ->  nothing can wake it: stop with status 0 and a message.
    auto halt = run_code("halt", { 0xFA, 0xF4 });
    CHECK(halt.reason == RunOutcome::Reason::HaltedForever);
    CHECK(halt.exit_status == 0);
    CHECK(halt.message.find("halted") != std::string::npos);

    // jmp $  ->  the instruction limit.
    auto spin = run_code("spin", { 0xEB, 0xFE }, 5000);
    CHECK(spin.reason == RunOutcome::Reason::InstructionLimit);
    CHECK(spin.exit_status == 1);
    CHECK(spin.instructions == 5000);

    // lidt [zero-limit descriptor at 0x100080]; ud2  ->  #UD, #DF, shutdown. With -no-reboot
    // that ends the run with status 0 (QEMU's shutdown); without it the machine resets and the
    // same code faults again, boot after boot, until the instruction limit.
    std::vector<uint8_t> triple = { 0x0F, 0x01, 0x1D, 0x80, 0x00, 0x10, 0x00, 0x0F, 0x0B };
    auto tf = run_code("triple", triple, 1'000'000, true);
    CHECK(tf.reason == RunOutcome::Reason::TripleFault);
    CHECK(tf.exit_status == 0);
    CHECK(tf.message.find("triple fault") != std::string::npos);
    auto again = run_code("triple-reboot", triple, 1000);
    CHECK(again.reason == RunOutcome::Reason::InstructionLimit);
}

TEST_CASE("machine: HLT with IF=1 and the timer's IRQ masked cannot wake up")
{
    // The PIT is armed, so the machine skips virtual time to its deadline; IRQ 0 is masked at
    // the PIC, so no interrupt reaches the CPU and the run ends instead of spinning. (Waking by
    // the timer is covered end to end by the irq guest in tests/integration.)
    std::vector<uint8_t> code = {
        0xB0, 0x34, 0xE6, 0x43,       // mov al,0x34; out 0x43,al   (channel 0, mode 2)
        0xB0, 0xA9, 0xE6, 0x40,       // lsb
        0xB0, 0x04, 0xE6, 0x40,       // msb (1193)
        0xB0, 0xFF, 0xE6, 0x21,       // mask everything at the master PIC
        0xFB, 0xF4,                   // sti; hlt
    };
    auto r = run_code("sleep", code);
    CHECK(r.reason == RunOutcome::Reason::HaltedForever);
}

TEST_CASE("machine: ACPI S5 (PM1_CNT at 0x604, SLP_EN with SLP_TYP 0) powers off with status 0")
{
    // mov dx, 0x604; mov ax, 0x2000; out dx, ax; jmp $
    auto r = run_code("poweroff", { 0x66, 0xBA, 0x04, 0x06, 0x66, 0xB8, 0x00, 0x20, 0x66, 0xEF, 0xEB, 0xFE });
    CHECK(r.reason == RunOutcome::Reason::PowerOff);
    CHECK(r.exit_status == 0);
}

TEST_CASE("machine: system_reset reloads the kernel and runs the guest again; -no-reboot makes it a shutdown")
{
    std::string serial;
    auto c = base_config(&serial);
    c.debug_exit.reset(); // the guest powers off through ACPI PM
    c.no_shutdown = true;
    auto m = Machine::create(std::move(c));
    REQUIRE(m.has_value());
    auto& machine = **m;
    std::vector<Machine::Event> events;
    int shutdowns = 0;
    std::string first_run;
    machine.set_event_sink([&](Machine::Event e) {
        events.push_back(e);
        if (e != Machine::Event::Shutdown)
            return;
        // On the machine's thread, as the QMP commands run: reset after the first power-off
        // (the machine comes back paused, "prelaunch"), cont, and quit after the second.
        if (++shutdowns == 1) {
            first_run = serial;
            machine.post([](Machine& mm) {
                REQUIRE(mm.system_reset().has_value());
                CHECK(mm.paused());
                CHECK_FALSE(mm.shut_down());
                mm.resume();
            });
        } else {
            machine.quit();
        }
    });
    auto out = machine.run();
    CHECK(out.reason == RunOutcome::Reason::Quit);
    REQUIRE_FALSE(first_run.empty());
    CHECK(serial == first_run + first_run); // the same program, run twice from a fresh load
    using E = Machine::Event;
    CHECK(events == std::vector<E> { E::Shutdown, E::Stop, E::Reset, E::Resume, E::Shutdown, E::Stop });

    auto c2 = base_config();
    c2.no_reboot = true;
    auto m2 = Machine::create(std::move(c2));
    REQUIRE(m2.has_value());
    (*m2)->pause();
    (*m2)->post([](Machine& mm) { REQUIRE(mm.system_reset().has_value()); });
    auto out2 = (*m2)->run();
    CHECK(out2.reason == RunOutcome::Reason::ResetShutdown);
    CHECK(out2.exit_status == 0);
}

// --- One -kernel entry for every protocol (load_kernel_image), in QEMU's order.
namespace {

std::string write_temp(std::string const& name, std::vector<uint8_t> const& bytes)
{
    auto p = (std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()))).string();
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<char const*>(bytes.data()), std::streamsize(bytes.size()));
    return p;
}

} // namespace

TEST_CASE("machine: -kernel bzImage boots through the 32-bit Linux boot protocol with the Linux E820 map")
{
    auto kernel = write_temp("machine-bzImage", test::synthetic_bzimage());
    std::vector<uint8_t> initrd_bytes(10000, 0x3C);
    auto initrd = write_temp("machine-initrd", initrd_bytes);
    auto c = base_config();
    c.kernel = kernel;
    c.initrd = initrd;
    c.append = "console=ttyS0 panic=-1";
    auto m = Machine::create(c);
    REQUIRE(m.has_value());
    auto& machine = **m;
    REQUIRE(machine.linux_boot().has_value());
    CHECK_FALSE(machine.multiboot().has_value());
    auto const& lb = *machine.linux_boot();
    CHECK(lb.protocol == LinuxBoot::Protocol::BzImage);
    // boot.rst "32-bit BOOT PROTOCOL": at the protected-mode code, %esi = zero page, flat
    // __BOOT_CS/__BOOT_DS, paging off, interrupts off.
    auto st = machine.cpu().state();
    CHECK(st.rip == 0x100000);
    CHECK(st.gpr[cpu::RSI] == 0x7000);
    CHECK(st.gpr[cpu::RBX] == 0);
    CHECK(st.seg[cpu::CS].selector == 0x10);
    CHECK(st.seg[cpu::SS].selector == 0x18);
    CHECK(st.cr0 == 0x11);
    CHECK((st.rflags & cpu::rflags::IF) == 0);
    // The guest is told the Linux map (64 MiB: the ACPI region at the top), not the PC map.
    auto const& map = machine.memory_map();
    std::vector<E820Entry> want = {
        { 0, 0x9FC00, 1 },
        { 0x9FC00, 0x60400, 2 },
        { 0x100000, (64ull << 20) - 0x10000 - 0x100000, 1 },
        { (64ull << 20) - 0x10000, 0x10000, 3 },
    };
    REQUIRE(map.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
        INFO("entry " << i);
        CHECK(map[i].base == want[i].base);
        CHECK(map[i].length == want[i].length);
        CHECK(map[i].type == want[i].type);
    }
    // The zero page the kernel reads: cmd_line_ptr (0x228), ramdisk (0x218/0x21C), e820_entries
    // (0x1E8), acpi_rsdp_addr (0x070) (Linux uapi/asm/bootparam.h).
    auto rd32 = [&](uint64_t a) {
        uint8_t b[4];
        REQUIRE(machine.memory().read(Spa(a), b, mmu::KeyId::none()).has_value());
        return uint32_t(b[0] | b[1] << 8 | b[2] << 16 | uint32_t(b[3]) << 24);
    };
    CHECK(rd32(0x7000 + 0x228) == 0x20000);
    CHECK(rd32(0x7000 + 0x21C) == 10000);
    CHECK(rd32(0x7000 + 0x218) == lb.initrd_addr);
    CHECK(lb.initrd_addr % 4096 == 0);
    CHECK(lb.initrd_addr + 10000 <= (64ull << 20) - 0x10000);
    CHECK((rd32(0x7000 + 0x1E8) & 0xFF) == 4);
    CHECK(rd32(0x7000 + 0x070) == lb.rsdp);
    CHECK(machine.boot_ranges().front().gpa == 0);
    std::remove(kernel.c_str());
    std::remove(initrd.c_str());
}

TEST_CASE("machine: -kernel vmlinux with a PVH note boots through PVH; above 4 GiB RAM is in the E820 map")
{
    auto kernel = write_temp("machine-vmlinux", test::synthetic_pvh());
    auto c = base_config();
    c.kernel = kernel;
    c.memory_size = 4ull << 30;
    auto m = Machine::create(c);
    REQUIRE(m.has_value());
    auto& machine = **m;
    REQUIRE(machine.linux_boot().has_value());
    CHECK(machine.linux_boot()->protocol == LinuxBoot::Protocol::Pvh);
    auto st = machine.cpu().state();
    CHECK(st.rip == 0x100040);
    CHECK(st.gpr[cpu::RBX] == 0x7000);
    // low_mem_top 3 GiB: the ACPI region ends there, the last GiB is at 4 GiB.
    auto const& map = machine.memory_map();
    REQUIRE(map.size() == 5);
    CHECK(map[3].base == 0xC000'0000ull - 0x10000);
    CHECK(map[3].type == 3);
    CHECK(map[4].base == 0x1'0000'0000ull);
    CHECK(map[4].length == (1ull << 30));
    CHECK(map[4].type == 1);
    std::remove(kernel.c_str());
}

TEST_CASE("machine: a -kernel in no known format is one line naming the formats sevemu boots")
{
    std::vector<uint8_t> junk(4096, 0x90);
    auto kernel = write_temp("machine-junk", junk);
    auto c = base_config();
    c.kernel = kernel;
    auto msg = error_of(c);
    CHECK(msg.find("bzImage") != std::string::npos);
    CHECK(msg.find("Multiboot") != std::string::npos);
    CHECK(msg.find("PVH") != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
    // An ELF64 without a PVH note (and no Multiboot header) says so, and names the formats.
    auto pvh = test::synthetic_pvh();
    pvh[0x208] = 17; // not XEN_ELFNOTE_PHYS32_ENTRY
    auto nonote = write_temp("machine-nonote", pvh);
    c.kernel = nonote;
    msg = error_of(c);
    CHECK(msg.find("PVH") != std::string::npos);
    CHECK(msg.find("Multiboot") != std::string::npos);
    std::remove(kernel.c_str());
    std::remove(nonote.c_str());
}

TEST_CASE("machine: QMP inject-nmi is an edge on every LINT1, so the LVT decides (QEMU's x86_nmi)")
{
    // 32-bit code at 0x100060 (write_kernel): the IDT's vector 2 -> a handler that leaves
    // through isa-debug-exit with 0x2a; main spins with IF=0.
    auto program = [](bool lint1_nmi) {
        std::vector<uint8_t> code(0x70, 0x90);
        // mov [SVR], 0x1FF (software enable: LVT masks stay set while disabled); mov [LVT LINT1], 0x400 (NMI)
        std::vector<uint8_t> set_lvt = { 0xC7, 0x05, 0xF0, 0x00, 0xE0, 0xFE, 0xFF, 0x01, 0x00, 0x00,
            0xC7, 0x05, 0x60, 0x03, 0xE0, 0xFE, 0x00, 0x04, 0x00, 0x00 };
        std::vector<uint8_t> main = { 0x0F, 0x01, 0x1D, 0x80, 0x00, 0x10, 0x00, 0xEB, 0xFE }; // lidt [0x100080]; jmp $
        if (!lint1_nmi)
            std::fill(set_lvt.begin() + 10, set_lvt.end(), 0x90); // LINT1 stays masked, as reset leaves it
        std::copy(set_lvt.begin(), set_lvt.end(), code.begin());
        std::copy(main.begin(), main.end(), code.begin() + 20);
        std::vector<uint8_t> idtr = { 0x17, 0x00, 0x90, 0x00, 0x10, 0x00 }; // 3 gates at 0x100090
        std::copy(idtr.begin(), idtr.end(), code.begin() + 0x20);
        std::vector<uint8_t> gate = { 0xC0, 0x00, 0x08, 0x00, 0x00, 0x8E, 0x10, 0x00 }; // vector 2 -> 0x1000C0
        std::fill(code.begin() + 0x30, code.begin() + 0x40, 0);
        std::copy(gate.begin(), gate.end(), code.begin() + 0x40);
        std::vector<uint8_t> handler = { 0xB0, 0x2A, 0xE6, 0xF4, 0xEB, 0xFE }; // mov al, 0x2a; out 0xf4, al; jmp $
        std::copy(handler.begin(), handler.end(), code.begin() + 0x60);
        return code;
    };
    for (bool lint1_nmi : { true, false }) {
        INFO("LINT1 in NMI mode: " << lint1_nmi);
        MachineConfig c;
        c.memory_size = 16ull << 20;
        c.kernel = write_kernel("inject-nmi", program(lint1_nmi));
        c.debug_exit = devices::DebugExitConfig { 0xF4, 4 };
        c.max_instructions = 5000;
        auto m = Machine::create(c);
        std::remove(c.kernel.c_str());
        REQUIRE(m.has_value());
        auto spin = (*m)->run();
        CHECK(spin.reason == RunOutcome::Reason::InstructionLimit);
        CHECK((*m)->lapic(0).reg(devices::LocalApic::kLvtLint1) == (lint1_nmi ? 0x400u : 0x10000u));
        (*m)->inject_nmi();
        auto out = (*m)->run();
        if (lint1_nmi) {
            CHECK(out.reason == RunOutcome::Reason::DebugExit);
            CHECK(out.exit_status == 85);
        } else {
            CHECK(out.reason == RunOutcome::Reason::InstructionLimit); // masked LVT: no NMI
        }
    }
}
