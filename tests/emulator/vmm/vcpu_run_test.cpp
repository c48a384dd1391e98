// vCPUs running on the interpreter (Vcpu::run over CpuExecutor, i.e. VMRUN/#VMEXIT in cpu/):
// exits for port I/O, CPUID, HLT, hypercalls and nested page faults; SEV guests whose memory is
// encrypted with their ASID's key, with the guest's C-bit choosing private or shared per page;
// two SEV guests that cannot read each other's memory; VMRUN refused for an unactivated ASID.
// Guest code is machine code written here byte by byte (the encodings are from the AMD APM
// vol 3 instruction reference).
#include "cpu/cpu.h"
#include "emulator/vmm/cpu_executor.h"
#include "emulator/vmm/vcpu.h"
#include "tests/emulator/vmm/vmm_harness.h"

#include <variant>

using namespace sevemu;
using namespace sevemu::test;
using namespace sevemu::cpu::svm;

namespace {

constexpr uint64_t kCode = 0x1000, kData = 0x2000;

struct Guest {
    Host& h;
    Vm vm;
    Spa ram;
    uint32_t pages;
    std::unique_ptr<Vcpu> vcpu;

    Guest(Host& host, bool sev, uint32_t npages = 16)
        : h(host)
        , vm(*host.sev, KVM_X86_DEFAULT_VM)
        , pages(npages)
    {
        if (sev)
            REQUIRE(op(vm, KVM_SEV_INIT, Hva(0)) == 0);
        auto r = h.host->alloc_pages(pages);
        REQUIRE(r.has_value());
        ram = *r;
        REQUIRE(h.host->copy_to(direct_map(ram), Bytes(pages * kPageSize, 0)).has_value());
        kvm_userspace_memory_region region { 0, 0, 0, pages * kPageSize, direct_map(ram).value };
        REQUIRE(vm.set_user_memory_region(region) == 0);
    }
    void write(uint64_t gpa, std::span<uint8_t const> bytes)
    {
        REQUIRE(h.host->copy_to(direct_map(ram + gpa), bytes).has_value());
    }
    // SEV: LAUNCH_START, LAUNCH_UPDATE_DATA over all of RAM (encrypting it in place), FINISH.
    void launch()
    {
        REQUIRE(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(kvm_sev_launch_start { 0, 1 })) == 0);
        kvm_sev_launch_update_data upd { direct_map(ram).value, uint32_t(pages * kPageSize) };
        REQUIRE(op(vm, KVM_SEV_LAUNCH_UPDATE_DATA, h.user_struct(upd)) == 0);
        Hva blob = h.user_buffer({}, 48);
        REQUIRE(op(vm, KVM_SEV_LAUNCH_MEASURE, h.user_struct(kvm_sev_launch_measure { blob.value, 48 })) == 0);
        REQUIRE(op(vm, KVM_SEV_LAUNCH_FINISH, Hva(0)) == 0);
    }
    Vcpu& make_vcpu()
    {
        auto v = Vcpu::create(vm, 0);
        REQUIRE(v.has_value());
        vcpu = std::move(*v);
        return *vcpu;
    }
};

// 32-bit protected mode, flat segments, paging off (the Multiboot hand-off).
void protected_mode(Vcpu& v, uint64_t rip)
{
    auto& s = v.state();
    s.cs = VmcbSeg { 0x08, 0xC9B, 0xFFFFFFFF, 0 };
    s.ds = s.es = s.ss = s.fs = s.gs = VmcbSeg { 0x10, 0xC93, 0xFFFFFFFF, 0 };
    s.cr0 = 0x11; // PE | ET
    s.rip = rip;
}

// Long mode at CPL 0 with the given CR3 (tables in guest memory).
void long_mode(Vcpu& v, uint64_t rip, uint64_t cr3)
{
    auto& s = v.state();
    s.cs = VmcbSeg { 0x08, 0xA9B, 0xFFFFFFFF, 0 };
    s.ds = s.es = s.ss = s.fs = s.gs = VmcbSeg { 0x10, 0xC93, 0xFFFFFFFF, 0 };
    s.cr0 = 0x80000011; // PG | PE | ET
    s.cr4 = 1u << 5;    // PAE
    s.efer = (1u << 12) | (1u << 10) | (1u << 8); // SVME | LMA | LME
    s.cr3 = cr3;
    s.rip = rip;
}

Bytes le32(uint32_t v) { return { uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24) }; }

template <class T>
T expect_exit(VcpuExit const& e)
{
    if (auto const* err = std::get_if<ExitInternalError>(&e))
        FAIL("internal error exit: " << err->reason);
    REQUIRE(std::holds_alternative<T>(e));
    return std::get<T>(e);
}

// mov eax,[kData]; out 0x80,eax; mov eax,0x8000001F; cpuid; mov eax,ebx; mov dx,0x81;
// out dx,eax; in al,0x82; mov [kData+4],eax; hlt
Bytes io_program()
{
    return { 0xA1, 0x00, 0x20, 0x00, 0x00, 0xE7, 0x80, 0xB8, 0x1F, 0x00, 0x00, 0x80, 0x0F, 0xA2, 0x89, 0xD8,
        0x66, 0xBA, 0x81, 0x00, 0xEF, 0xE4, 0x82, 0xA3, 0x04, 0x20, 0x00, 0x00, 0xF4 };
}

void run_io_program(Guest& g, cpu::Cpu& cpu)
{
    Vcpu& v = g.make_vcpu();
    protected_mode(v, kCode);
    v.set_cpuid({ { 0x8000001F, 0, 0x2, 0x1234, 0, 0 } });
    CpuExecutor exec(cpu);
    auto out = expect_exit<ExitIo>(v.run(exec));
    CHECK(out.port == 0x80);
    CHECK(out.size == 4);
    CHECK_FALSE(out.in);
    CHECK(out.value == 0xC0FFEE11);
    auto out2 = expect_exit<ExitIo>(v.run(exec));
    CHECK(out2.port == 0x81);
    CHECK(out2.value == 0x1234); // CPUID answered from the VMM's table (KVM_SET_CPUID2)
    auto in = expect_exit<ExitIo>(v.run(exec));
    CHECK(in.port == 0x82);
    CHECK(in.size == 1);
    CHECK(in.in);
    v.complete_io_in(0x5A);
    expect_exit<ExitHlt>(v.run(exec));
    CHECK(v.vmcb().save.rip == kCode + io_program().size()); // after HLT (NRIP)
    CHECK_FALSE(cpu.in_guest_mode());
}

} // namespace

TEST_CASE("a plain guest runs on the CPU: I/O, CPUID and HLT exits", "[vmm][vcpu][run]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, false);
    g.write(kCode, io_program());
    g.write(kData, le32(0xC0FFEE11));
    run_io_program(g, cpu);
    // The value the guest stored is in DRAM in plaintext: no SEV.
    Bytes b(4);
    REQUIRE(h.mc->read(g.ram + kData + 4, b, mmu::KeyId::none()).has_value());
    CHECK(b == le32(0x0000125A)); // EAX = 0x1234 (CPUID EBX), then IN AL = 0x5A
}

TEST_CASE("an SEV guest runs from encrypted memory; what it stores is ciphertext to the host", "[vmm][vcpu][run][sev]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, true);
    g.write(kCode, io_program());
    g.write(kData, le32(0xC0FFEE11));
    g.launch();
    // After LAUNCH_UPDATE_DATA the host sees only ciphertext of the code.
    Bytes code(io_program().size());
    REQUIRE(h.mc->read(g.ram + kCode, code, mmu::KeyId::none()).has_value());
    CHECK(code != io_program());
    run_io_program(g, cpu);
    mmu::KeyId key = mmu::KeyId::slot(g.vm.sev().asid);
    Bytes b(4);
    REQUIRE(h.mc->read(g.ram + kData + 4, b, key).has_value());
    CHECK(b == le32(0x0000125A)); // EAX = 0x1234 (CPUID EBX), then IN AL = 0x5A
    REQUIRE(h.mc->read(g.ram + kData + 4, b, mmu::KeyId::none()).has_value());
    CHECK(b != le32(0x0000125A));
}

namespace {

// Identity map of the first 2 MiB with 4 KiB pages at GPA 0x8000 (PML4) .. 0xA000 (PT), every
// entry with the C-bit except the PTE of `shared_page`. The tables are private guest memory
// (LAUNCH_UPDATE_DATA encrypts them with the rest of RAM).
void build_tables(Guest& g, uint64_t c_bit, uint64_t shared_page)
{
    uint64_t c = 1ull << c_bit;
    auto put = [&](uint64_t gpa, uint64_t v) {
        Bytes b(8);
        for (int i = 0; i < 8; ++i) b[i] = uint8_t(v >> (8 * i));
        g.write(gpa, b);
    };
    put(0x8000, 0x9000 | 3 | c);          // PML4[0] -> PDPT
    put(0x9000, 0xA000 | 3 | c);          // PDPT[0] -> PD
    put(0xA000, 0xB000 | 3 | c);          // PD[0] -> PT
    for (uint64_t p = 0; p < g.pages; ++p)
        put(0xB000 + 8 * p, (p << 12) | 3 | (p << 12 == shared_page ? 0 : c));
}

} // namespace

TEST_CASE("an SEV guest's C-bit chooses: private pages take its key, shared pages are plaintext", "[vmm][vcpu][run][sev]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, true);
    uint64_t c_bit = cpu_model_info(CpuModel::Milan).c_bit;
    build_tables(g, c_bit, 0x5000);
    // 64-bit: mov rax, imm64; mov [0x4000], rax; mov [0x5000], rax; mov ecx, 0xC0010131;
    // rdmsr (SEV_STATUS); out 0x80, eax; hlt
    Bytes code = { 0x48, 0xB8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x48, 0x89, 0x04, 0x25, 0x00, 0x40,
        0x00, 0x00, 0x48, 0x89, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, 0xB9, 0x31, 0x01, 0x01, 0xC0, 0x0F, 0x32, 0xE7, 0x80, 0xF4 };
    g.write(kCode, code);
    g.launch();
    Vcpu& v = g.make_vcpu();
    long_mode(v, kCode, 0x8000 | (1ull << c_bit)); // CR3's C-bit: the PML4 is private too
    CpuExecutor exec(cpu);
    auto out = expect_exit<ExitIo>(v.run(exec));
    CHECK(out.value == 1); // SEV_STATUS: SEV active, not SEV-ES (passed through, never intercepted)
    expect_exit<ExitHlt>(v.run(exec));

    Bytes plain = { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11 };
    Bytes b(8);
    mmu::KeyId key = mmu::KeyId::slot(g.vm.sev().asid);
    REQUIRE(h.mc->read(g.ram + 0x4000, b, mmu::KeyId::none()).has_value());
    CHECK(b != plain); // private: the hypervisor's view is ciphertext
    REQUIRE(h.mc->read(g.ram + 0x4000, b, key).has_value());
    CHECK(b == plain);
    REQUIRE(h.mc->read(g.ram + 0x5000, b, mmu::KeyId::none()).has_value());
    CHECK(b == plain); // shared (C=0): plaintext in DRAM
}

TEST_CASE("two SEV guests on one CPU: a page of one mapped into the other reads as noise", "[vmm][vcpu][run][sev]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest a(h, true), b(h, true);
    REQUIRE(a.vm.sev().asid != b.vm.sev().asid);
    a.write(kData, le32(0xA11CE000));
    // A: mov eax, [kData]; out 0x80, eax; hlt
    Bytes code = { 0xA1, 0x00, 0x20, 0x00, 0x00, 0xE7, 0x80, 0xF4 };
    a.write(kCode, code);
    a.launch();
    // B's own code reads GPA 0x100000, where a malicious hypervisor maps A's data page:
    // mov eax, [0x100000]; out 0x80, eax; hlt
    Bytes b_code = { 0xA1, 0x00, 0x00, 0x10, 0x00, 0xE7, 0x80, 0xF4 };
    b.write(kCode, b_code);
    b.launch();
    kvm_userspace_memory_region steal { 1, 0, 0x100000, kPageSize, direct_map(a.ram + kData).value };
    REQUIRE(b.vm.set_user_memory_region(steal) == 0);

    Vcpu& va = a.make_vcpu();
    protected_mode(va, kCode);
    Vcpu& vb = b.make_vcpu();
    protected_mode(vb, kCode);
    CpuExecutor exec(cpu);
    CHECK(expect_exit<ExitIo>(va.run(exec)).value == 0xA11CE000);
    auto stolen = expect_exit<ExitIo>(vb.run(exec));
    CHECK(stolen.value != 0xA11CE000); // decrypted with B's key: noise
    // And A still reads its own value after B ran (no plaintext left behind for the wrong key).
    expect_exit<ExitHlt>(va.run(exec));
    expect_exit<ExitHlt>(vb.run(exec));
}

TEST_CASE("VMRUN on the CPU refuses an SEV guest whose ASID the firmware never activated", "[vmm][vcpu][run][sev]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, true); // KVM_SEV_INIT only: no LAUNCH_START, so no ACTIVATE
    Vcpu& v = g.make_vcpu();
    protected_mode(v, kCode);
    CpuExecutor exec(cpu);
    auto e = expect_exit<ExitFailEntry>(v.run(exec));
    CHECK(e.hardware_entry_failure_reason == exitcode::VMEXIT_INVALID);
    CHECK_FALSE(cpu.in_guest_mode());
}

TEST_CASE("hypercalls and a slice-ending stop reach the VMM", "[vmm][vcpu][run]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, false);
    // mov eax, 12; mov ebx, 0x900000; mov ecx, 1; xor edx, edx; vmmcall; out 0x80, eax;
    // jmp $ (spin until the slice ends); then (never) ...
    Bytes code = { 0xB8, 0x0C, 0x00, 0x00, 0x00, 0xBB, 0x00, 0x00, 0x90, 0x00, 0xB9, 0x01, 0x00, 0x00, 0x00, 0x31, 0xD2,
        0x0F, 0x01, 0xD9, 0xE7, 0x80, 0xEB, 0xFE };
    g.write(kCode, code);
    Vcpu& v = g.make_vcpu();
    protected_mode(v, kCode);
    CpuExecutor exec(cpu, 100'000);
    auto hc = expect_exit<ExitHypercall>(v.run(exec));
    CHECK(hc.nr == KVM_HC_MAP_GPA_RANGE);
    CHECK(hc.args == std::array<uint64_t, 3> { 0x900000, 1, 0 });
    v.complete_hypercall(0);
    CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0);
    // The spin loop: the executor's slice ends in #VMEXIT(INTR), which the VMM sees as ExitIntr.
    expect_exit<ExitIntr>(v.run(exec));
    expect_exit<ExitIntr>(v.run(exec));
}

TEST_CASE("MMIO through #NPF: decode-assist bytes, reads into registers, writes with their values", "[vmm][vcpu][run]")
{
    for (bool sev : { false, true }) {
        INFO("SEV " << sev);
        Host h;
        NoIo io;
        cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
        Guest g(h, sev);
        // mov eax,[0xFE000000]; out 0x80,eax; mov dword [0xFE000010],0xCAFEBABE;
        // movzx ecx,byte [0xFE000020]; mov eax,ecx; out 0x80,eax; mov [0xFE000030],cx;
        // mov ah,[0xFE000040]; out 0x80,eax; movsx edx,word [0xFE000050]; mov eax,edx; out 0x80,eax; hlt
        g.write(kCode, Bytes { 0xA1, 0x00, 0x00, 0x00, 0xFE, 0xE7, 0x80, 0xC7, 0x05, 0x10, 0x00, 0x00, 0xFE, 0xBE, 0xBA,
                           0xFE, 0xCA, 0x0F, 0xB6, 0x0D, 0x20, 0x00, 0x00, 0xFE, 0x89, 0xC8, 0xE7, 0x80, 0x66, 0x89, 0x0D,
                           0x30, 0x00, 0x00, 0xFE, 0x8A, 0x25, 0x40, 0x00, 0x00, 0xFE, 0xE7, 0x80, 0x0F, 0xBF, 0x15, 0x50,
                           0x00, 0x00, 0xFE, 0x89, 0xD0, 0xE7, 0x80, 0xF4 });
        if (sev)
            g.launch(); // the code is now ciphertext: only the decode-assist bytes show it to the VMM
        Vcpu& v = g.make_vcpu();
        protected_mode(v, kCode);
        CpuExecutor exec(cpu);
        auto r1 = expect_exit<ExitMmio>(v.run(exec));
        CHECK(r1.gpa == 0xFE000000);
        CHECK(r1.size == 4);
        CHECK_FALSE(r1.is_write);
        v.complete_mmio_read(0x11223344);
        CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0x11223344);
        auto w1 = expect_exit<ExitMmio>(v.run(exec));
        CHECK(w1.gpa == 0xFE000010);
        CHECK(w1.is_write);
        CHECK(w1.size == 4);
        CHECK(w1.data == 0xCAFEBABE);
        auto r2 = expect_exit<ExitMmio>(v.run(exec));
        CHECK(r2.size == 1);
        v.complete_mmio_read(0xFFF0); // only the access's byte counts
        CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0xF0);
        auto w2 = expect_exit<ExitMmio>(v.run(exec));
        CHECK(w2.gpa == 0xFE000030);
        CHECK(w2.size == 2);
        CHECK(w2.data == 0xF0);
        auto r3 = expect_exit<ExitMmio>(v.run(exec));
        CHECK(r3.size == 1);
        v.complete_mmio_read(0x5A); // into AH
        CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0x5AF0);
        auto r4 = expect_exit<ExitMmio>(v.run(exec));
        CHECK(r4.size == 2);
        v.complete_mmio_read(0x8001); // MOVSX: sign-extended to 32 bits
        CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0xFFFF8001);
        expect_exit<ExitHlt>(v.run(exec));
    }
}

TEST_CASE("MMIO decoding: the forms drivers use, and clear refusals", "[vmm][mmio]")
{
    auto d = [](Bytes b, CodeSize m = CodeSize::Bits64) { return decode_mmio_insn(b, m); };
    auto mov64 = d({ 0x48, 0x8B, 0x07 }); // mov rax, [rdi]
    REQUIRE(mov64.has_value());
    CHECK(mov64->size == 8);
    CHECK(*mov64->reg == 0);
    CHECK(mov64->length == 3);
    auto r15 = d({ 0x44, 0x89, 0x3E }); // mov [rsi], r15d
    REQUIRE(r15.has_value());
    CHECK(r15->write);
    CHECK(*r15->reg == 15);
    CHECK(r15->size == 4);
    auto imm = d({ 0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF }); // mov qword [rax], -1
    REQUIRE(imm.has_value());
    CHECK(imm->imm == ~0ull);
    CHECK(mmio_write_value(*imm, 0) == ~0ull);
    auto w16 = d({ 0x89, 0x07 }, CodeSize::Bits16); // mov [bx], ax in 16-bit code
    REQUIRE(w16.has_value());
    CHECK(w16->size == 2);
    CHECK(apply_mmio_read(*d({ 0x8B, 0x07 }), 0xFFFFFFFF'FFFFFFFFull, 0x12345678) == 0x12345678); // 32-bit: zero-extends
    CHECK(apply_mmio_read(*d({ 0x66, 0x8B, 0x07 }), 0xFFFFFFFF'FFFFFFFFull, 0x1234) == 0xFFFFFFFF'FFFF1234ull); // 16-bit merges
    CHECK_FALSE(d({ 0x01, 0x07 }).has_value());   // add [rdi], eax: not emulated
    CHECK_FALSE(d({ 0xA4 }).has_value());         // movsb: string MMIO
    CHECK_FALSE(d({ 0x0F, 0x28, 0x07 }).has_value()); // movaps xmm0, [rdi]
    CHECK_FALSE(d({ 0x8B }).has_value());         // truncated
}

TEST_CASE("interrupts from the VMM: KVM_INTERRUPT-style injection and the interrupt window", "[vmm][vcpu][run]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, true);
    // 32-bit IDT at 0x3000 (limit 0x7FF): vector 0x20 -> 0x1800, a 32-bit interrupt gate.
    uint64_t gate = 0x1800 | (uint64_t(0x08) << 16) | (uint64_t(0x8E) << 40);
    Bytes idt(8);
    for (int i = 0; i < 8; ++i) idt[i] = uint8_t(gate >> (8 * i));
    g.write(0x3000 + 0x20 * 8, idt);
    // GDT at 0x3800: null, code32 (0x08), data (0x10) — the handler's IRET reloads CS from it.
    Bytes gdt = { 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0x9B, 0xCF, 0, 0xFF, 0xFF, 0, 0, 0, 0x93, 0xCF, 0 };
    g.write(0x3800, gdt);
    // Handler at 0x1800: mov al, 0x20; out 0x81, al; iret
    g.write(0x1800, Bytes { 0xB0, 0x20, 0xE6, 0x81, 0xCF });
    // Main at 0x1000: sti; hlt; out 0x80, al; cli; out 0x82, al; sti; nop; out 0x83, al; hlt
    g.write(kCode, Bytes { 0xFB, 0xF4, 0xE6, 0x80, 0xFA, 0xE6, 0x82, 0xFB, 0x90, 0xE6, 0x83, 0xF4 });
    g.launch();
    Vcpu& v = g.make_vcpu();
    protected_mode(v, kCode);
    v.state().idtr = VmcbSeg { 0, 0, 0x7FF, 0x3000 };
    v.state().gdtr = VmcbSeg { 0, 0, 0x17, 0x3800 };
    v.state().rsp = 0x8000;
    CpuExecutor exec(cpu);

    expect_exit<ExitHlt>(v.run(exec));
    REQUIRE(v.ready_for_interrupt_injection()); // IF=1 after STI; HLT ended the shadow
    REQUIRE(v.inject_interrupt(0x20));
    CHECK_FALSE(v.inject_interrupt(0x21)); // one event at a time
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x81); // the handler ran
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x80); // IRET back after the HLT
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x82); // at CLI: not ready
    CHECK_FALSE(v.ready_for_interrupt_injection());
    v.request_interrupt_window();
    // The window opens after STI and its one-instruction shadow (the NOP), before OUT 0x83.
    expect_exit<ExitIrqWindowOpen>(v.run(exec));
    CHECK(v.vmcb().save.rip == kCode + 9);
    REQUIRE(v.inject_interrupt(0x20));
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x81);
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x83);
    expect_exit<ExitHlt>(v.run(exec));
}

TEST_CASE("the TLB is tagged by ASID: entries survive #VMEXIT and VMRUN until TLB_CONTROL flushes them", "[vmm][vcpu][run]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, false);
    auto put = [&](uint64_t gpa, uint64_t v) {
        Bytes b(8);
        for (int i = 0; i < 8; ++i) b[i] = uint8_t(v >> (8 * i));
        g.write(gpa, b);
    };
    put(0x8000, 0x9000 | 3);
    put(0x9000, 0xA000 | 3);
    put(0xA000, 0xB000 | 3);
    for (uint64_t p = 0; p < g.pages; ++p)
        put(0xB000 + 8 * p, (p << 12) | 3);
    g.write(0x4000, le32(0x1111));
    g.write(0x5000, le32(0x2222));
    // loop: mov eax, [0x4000]; out 0x80, eax; jmp loop
    g.write(kCode, Bytes { 0x8B, 0x04, 0x25, 0x00, 0x40, 0x00, 0x00, 0xE7, 0x80, 0xEB, 0xF5 });
    Vcpu& v = g.make_vcpu();
    long_mode(v, kCode, 0x8000);
    CpuExecutor exec(cpu);
    CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0x1111);
    // The hypervisor remaps linear 0x4000 to 0x5000 behind the guest's back (no flush).
    put(0xB000 + 8 * 4, 0x5000 | 3);
    for (int i = 0; i < 3; ++i) // the guest's TLB entry for ASID N survived the exits: stale
        CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0x1111);
    v.request_tlb_flush();
    CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0x2222);
    CHECK(expect_exit<ExitIo>(v.run(exec)).value == 0x2222);
}

TEST_CASE("NMIs from the VMM: EVENTINJ type NMI whatever IF, masked until the handler's IRET", "[vmm][vcpu][run][sev]")
{
    Host h;
    NoIo io;
    cpu::Cpu cpu(*h.mc, CpuModel::Milan, io);
    Guest g(h, true);
    // 32-bit IDT at 0x3000: vector 2 (NMI) -> 0x1800, a 32-bit interrupt gate.
    uint64_t gate = 0x1800 | (uint64_t(0x08) << 16) | (uint64_t(0x8E) << 40);
    Bytes idt(8);
    for (int i = 0; i < 8; ++i) idt[i] = uint8_t(gate >> (8 * i));
    g.write(0x3000 + 2 * 8, idt);
    Bytes gdt = { 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0x9B, 0xCF, 0, 0xFF, 0xFF, 0, 0, 0, 0x93, 0xCF, 0 };
    g.write(0x3800, gdt);
    // Handler at 0x1800: out 0x81, al; out 0x85, al; iret
    g.write(0x1800, Bytes { 0xE6, 0x81, 0xE6, 0x85, 0xCF });
    // Main at 0x1000: cli; out 0x80, al; out 0x84, al; out 0x86, al; hlt
    g.write(kCode, Bytes { 0xFA, 0xE6, 0x80, 0xE6, 0x84, 0xE6, 0x86, 0xF4 });
    g.launch();
    Vcpu& v = g.make_vcpu();
    protected_mode(v, kCode);
    v.state().idtr = VmcbSeg { 0, 0, 0x7FF, 0x3000 };
    v.state().gdtr = VmcbSeg { 0, 0, 0x17, 0x3800 };
    v.state().rsp = 0x8000;
    CpuExecutor exec(cpu);

    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x80);
    CHECK_FALSE(v.ready_for_interrupt_injection()); // IF=0
    REQUIRE(v.ready_for_nmi_injection());          // an NMI does not care
    REQUIRE(v.inject_nmi());
    CHECK_FALSE(v.inject_nmi()); // one event at a time
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x81); // the NMI handler runs
    CHECK(v.nmi_masked());
    CHECK_FALSE(v.inject_nmi()); // a second NMI waits for the IRET
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x85);
    CHECK_FALSE(v.ready_for_nmi_injection());
    // The IRET is intercepted inside run() and then completes: back in main, unmasked.
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x84);
    CHECK_FALSE(v.nmi_masked());
    REQUIRE(v.inject_nmi());
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x81);
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x85);
    CHECK(expect_exit<ExitIo>(v.run(exec)).port == 0x86);
    expect_exit<ExitHlt>(v.run(exec));
}
