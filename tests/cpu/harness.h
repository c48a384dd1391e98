// sevemu tests — a small machine around one Cpu: DRAM, a recording IoHandler, and helpers that
// build descriptor tables, identity page tables and exception stubs in guest memory, so that
// a test states bytes in and architectural state out.
//
// Layout (guest physical): 0x500 GDT, 0x1000.. page tables, 0x4000 IDT, 0x6000 TSS,
// 0x7000 exception stubs (vector v at 0x7000 + 16 v: "hlt"), 0x10000 test code,
// stack top 0x80000, data 0x20000.
#pragma once

#include "cpu/cpu.h"
#include "mmu/memory_controller.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <optional>
#include <initializer_list>
#include <memory>
#include <vector>

namespace sevemu::cpu::test {

inline constexpr uint64_t kGdt = 0x500, kPml4 = 0x1000, kIdt = 0x4000, kTss = 0x6000, kStubs = 0x7000,
                          kCode = 0x10000, kData = 0x20000, kStackTop = 0x80000;

struct TestIo : IoHandler {
    std::vector<std::pair<uint16_t, uint32_t>> outs;
    std::vector<std::pair<uint64_t, uint64_t>> mmio_writes;
    Cpu* cpu {};
    bool irq {};
    uint8_t irq_vector {};
    uint32_t port_in(uint16_t port, uint8_t) override { return port == 0x42 ? 0x12345678 : 0xFFFFFFFF; }
    void port_out(uint16_t port, uint8_t, uint32_t v) override
    {
        outs.emplace_back(port, v);
        if (port == 0xF4 && cpu) // isa-debug-exit style
            cpu->request_stop();
    }
    uint64_t mmio_read(Spa a, uint8_t) override { return a.value & 0xFF; }
    void mmio_write(Spa a, uint8_t, uint64_t v) override { mmio_writes.emplace_back(a.value, v); }
    // A stand-in local APIC for the MSR hooks (io.h): unset = no LAPIC, the IoHandler default.
    std::function<std::optional<uint64_t>(uint32_t)> apic_read;
    std::function<std::optional<bool>(uint32_t, uint64_t)> apic_write;
    std::optional<uint64_t> apic_msr_read(uint32_t idx) override { return apic_read ? apic_read(idx) : std::nullopt; }
    std::optional<bool> apic_msr_write(uint32_t idx, uint64_t v) override
    {
        return apic_write ? apic_write(idx, v) : std::nullopt;
    }
    bool interrupt_pending() override { return irq; }
    uint8_t acknowledge_interrupt() override
    {
        irq = false;
        return irq_vector;
    }
};

// Prot16: 16-bit protected mode (CS = GDT 0x50, 16-bit code, base kCode, IP 0); Compat32 and
// Compat16: long mode with a 32-bit CS (0x18) or that 16-bit CS; V86: virtual-8086 mode from
// 32-bit protected mode (CS = 0x1000, IP 0; SS:SP = 0x7000:FFF0; 32-bit TSS with ESP0 0x70000).
enum class Mode { Real, Prot32, Long64, Prot16, Compat32, Compat16, V86 };

struct Machine {
    std::unique_ptr<mmu::MemoryController> mc;
    TestIo io;
    std::unique_ptr<Cpu> cpu;

    explicit Machine(CpuModel model = CpuModel::Milan, uint64_t dram = 16ull << 20)
    {
        mmu::MemoryConfig cfg;
        cfg.dram_size = dram;
        cfg.cache_pages = 256;
        mc = std::move(*mmu::MemoryController::create(cfg));
        cpu = std::make_unique<Cpu>(*mc, model, io);
        io.cpu = cpu.get();
    }

    void write(uint64_t pa, void const* p, size_t n)
    {
        REQUIRE(mc->write(Spa(pa), std::span<uint8_t const>(static_cast<uint8_t const*>(p), n), mmu::KeyId::none()).has_value());
        cpu->invalidate_code(Spa(pa), n);
    }
    void write(uint64_t pa, std::initializer_list<uint8_t> bytes)
    {
        std::vector<uint8_t> v(bytes);
        write(pa, v.data(), v.size());
    }
    void write(uint64_t pa, std::vector<uint8_t> const& v) { write(pa, v.data(), v.size()); }
    template <class T> void put(uint64_t pa, T v) { write(pa, &v, sizeof v); }
    template <class T> T get(uint64_t pa)
    {
        T v {};
        REQUIRE(mc->read(Spa(pa), std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v), mmu::KeyId::none()).has_value());
        return v;
    }

    static uint64_t desc(uint32_t base, uint32_t limit, uint16_t attr)
    {
        // attr in VMCB packing: type/S/DPL/P in [7:0], AVL/L/DB/G in [11:8]
        uint64_t d = (limit & 0xFFFF) | (uint64_t(base & 0xFFFFFF) << 16) | (uint64_t(attr & 0xFF) << 40)
            | (uint64_t((limit >> 16) & 0xF) << 48) | (uint64_t((attr >> 8) & 0xF) << 52) | (uint64_t(base >> 24) << 56);
        return d;
    }

    // GDT: 0x08 code64 DPL0, 0x10 data DPL0, 0x18 code32 DPL0, 0x20 code16, 0x28 TSS (16 bytes),
    // 0x38 code32 DPL3, 0x40 data DPL3, 0x48 code64 DPL3.
    void build_gdt()
    {
        put<uint64_t>(kGdt + 0x00, 0);
        put<uint64_t>(kGdt + 0x08, desc(0, 0xFFFFF, 0xA9B));
        put<uint64_t>(kGdt + 0x10, desc(0, 0xFFFFF, 0xC93));
        put<uint64_t>(kGdt + 0x18, desc(0, 0xFFFFF, 0xC9B));
        put<uint64_t>(kGdt + 0x20, desc(0, 0xFFFF, 0x09B));
        put<uint64_t>(kGdt + 0x28, desc(kTss, 0x67, 0x089));
        put<uint64_t>(kGdt + 0x30, 0);
        put<uint64_t>(kGdt + 0x38, desc(0, 0xFFFFF, 0xCFB));
        put<uint64_t>(kGdt + 0x40, desc(0, 0xFFFFF, 0xCF3));
        put<uint64_t>(kGdt + 0x48, desc(0, 0xFFFFF, 0xAFB));
    }
    // Exception stubs: vector v -> kStubs + 16 v holds HLT.
    void build_stubs()
    {
        for (int v = 0; v < 256; ++v)
            write(kStubs + 16 * v, { 0xF4, 0xEB, 0xFD }); // hlt; jmp back to hlt
    }
    void build_idt64()
    {
        for (int v = 0; v < 256; ++v) {
            uint64_t off = kStubs + 16 * v;
            uint64_t lo = (off & 0xFFFF) | (uint64_t(0x08) << 16) | (uint64_t(0x8E) << 40) | ((off >> 16 & 0xFFFF) << 48);
            if (v == 0x80) lo |= uint64_t(3) << 45; // DPL3 for INT 0x80 tests
            put<uint64_t>(kIdt + 16 * v, lo);
            put<uint64_t>(kIdt + 16 * v + 8, off >> 32);
        }
    }
    void build_idt32()
    {
        for (int v = 0; v < 256; ++v) {
            uint64_t off = kStubs + 16 * v;
            uint64_t lo = (off & 0xFFFF) | (uint64_t(0x18) << 16) | (uint64_t(0x8E) << 40) | ((off >> 16 & 0xFFFF) << 48);
            if (v == 0x80) lo |= uint64_t(3) << 45;
            put<uint64_t>(kIdt + 8 * v, lo);
        }
    }
    // Identity map of the first 1 GiB with 2 MiB pages, plus the first 2 MiB with 4 KiB pages
    // (PT at 0x4000+... no: PT at 0x8000) so tests can tweak single PTEs.
    void build_paging64(uint64_t extra_pte_flags = 0)
    {
        put<uint64_t>(kPml4, 0x2000 | 0x7);
        put<uint64_t>(0x2000, 0x3000 | 0x7);
        put<uint64_t>(0x3000, 0x8000 | 0x7); // first 2 MiB via a page table
        for (int k = 1; k < 512; ++k)
            put<uint64_t>(0x3000 + 8 * k, (uint64_t(k) << 21) | 0x87);
        for (int k = 0; k < 512; ++k)
            put<uint64_t>(0x8000 + 8 * k, (uint64_t(k) << 12) | 0x7 | extra_pte_flags);
    }
    void build_tss64(uint64_t rsp0 = 0x70000, uint64_t ist1 = 0x60000)
    {
        put<uint64_t>(kTss + 4, rsp0);
        put<uint64_t>(kTss + 0x24, ist1);
        put<uint16_t>(kTss + 0x66, 0x68);
    }

    CpuState base_state(Mode m)
    {
        cpu->reset();
        CpuState s = cpu->state();
        if (m == Mode::Real) {
            s.seg[CS] = Segment { 0x1000, 0x9B, 0xFFFF, 0x10000 };
            for (unsigned k : { ES, SS, DS, FS, GS })
                s.seg[k] = Segment { 0x1000, 0x93, 0xFFFF, 0x10000 };
            s.rip = 0;
            s.gpr[RSP] = 0xFFF0;
            s.idtr = { 0, 0x3FF };
            return s;
        }
        build_gdt();
        build_stubs();
        s.gdtr = { kGdt, 0x4F };
        s.gpr[RSP] = kStackTop;
        s.rip = kCode;
        s.tr = Segment { 0x28, 0x8B, 0x67, kTss };
        put<uint64_t>(kGdt + 0x50, desc(uint32_t(kCode), 0xFFFF, 0x09B)); // 16-bit code at kCode
        s.gdtr.limit = 0x57;
        if (m == Mode::V86) {
            build_idt32();
            s.idtr = { kIdt, 256 * 8 - 1 };
            s.cr0 = 0x11;
            s.rflags = 0x20002; // VM
            s.seg[CS] = Segment { 0x1000, 0xF3, 0xFFFF, 0x10000 };
            s.seg[SS] = Segment { 0x7000, 0xF3, 0xFFFF, 0x70000 };
            for (unsigned k : { ES, DS, FS, GS })
                s.seg[k] = Segment { 0x1000, 0xF3, 0xFFFF, 0x10000 };
            s.rip = 0;
            s.gpr[RSP] = 0xFFF0;
            put<uint32_t>(kTss + 4, 0x70000); // ESP0
            put<uint32_t>(kTss + 8, 0x10);    // SS0
            put<uint16_t>(kTss + 0x66, 0x68); // no I/O bitmap inside the limit: every port denied
            s.tr = Segment { 0x28, 0x8B, 0x67, kTss };
            return s;
        }
        if (m == Mode::Prot32 || m == Mode::Prot16) {
            build_idt32();
            s.idtr = { kIdt, 256 * 8 - 1 };
            s.cr0 = 0x11;
            s.seg[CS] = Segment { 0x18, 0xC9B, 0xFFFFFFFF, 0 };
            for (unsigned k : { ES, SS, DS, FS, GS })
                s.seg[k] = Segment { 0x10, 0xC93, 0xFFFFFFFF, 0 };
            s.tr = Segment { 0x28, 0x0, 0, 0 };
            if (m == Mode::Prot16) {
                s.seg[CS] = Segment { 0x50, 0x09B, 0xFFFF, kCode };
                s.rip = 0;
            }
            return s;
        }
        build_idt64();
        build_paging64();
        build_tss64();
        s.idtr = { kIdt, 256 * 16 - 1 };
        s.cr0 = 0x80000011 | (1u << 16);
        s.cr3 = kPml4;
        s.cr4 = 0x20 | 0x600; // PAE, OSFXSR, OSXMMEXCPT
        s.efer = 0x500 | 0x800 | 0x1; // LME, LMA, NXE, SCE
        s.seg[CS] = Segment { 0x08, 0xA9B, 0xFFFFFFFF, 0 };
        for (unsigned k : { ES, SS, DS, FS, GS })
            s.seg[k] = Segment { 0x10, 0xC93, 0xFFFFFFFF, 0 };
        if (m == Mode::Compat32) {
            s.seg[CS] = Segment { 0x18, 0xC9B, 0xFFFFFFFF, 0 };
        } else if (m == Mode::Compat16) {
            s.seg[CS] = Segment { 0x50, 0x09B, 0xFFFF, kCode };
            s.rip = 0;
        }
        return s;
    }

    void start(Mode m, std::vector<uint8_t> const& code)
    {
        CpuState s = base_state(m);
        write(m == Mode::Real ? 0x10000 : kCode, code);
        cpu->set_state(s);
    }
    RunResult run(uint64_t n = 100000) { return cpu->run(n); }
    // For exception tests: the stub the CPU halted in (vector), or -1.
    int halted_vector()
    {
        uint64_t rip = cpu->rip();
        if (!cpu->halted() || rip < kStubs + 1 || rip >= kStubs + 16 * 256) return -1;
        if ((rip - kStubs - 1) % 16) return -1;
        return int((rip - kStubs - 1) / 16);
    }
};

} // namespace sevemu::cpu::test
