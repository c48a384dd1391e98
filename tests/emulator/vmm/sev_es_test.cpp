// SEV-ES through the hypervisor layer, on the interpreter: a VM made with KVM_SEV_INIT2 on a
// KVM_X86_SEV_ES_VM, vCPUs whose VMSA LAUNCH_UPDATE_VMSA encrypts and measures, and a real guest
// program (es_guest.S, assembled by meson) that reaches the hypervisor only through the GHCB MSR
// protocol and its GHCB page. Known answers come from outside the code under test: the VMSA
// layout from the APM / Linux struct sev_es_save_area offsets, the launch digest from OpenSSL's
// SHA-256 checked by the guest owner's library, the GHCB replies from Linux's sev.c rules.
#include "cpu/cpu.h"
#include "emulator/vmm/cpu_executor.h"
#include "emulator/vmm/vcpu.h"
#include "tests/emulator/vmm/vmm_harness.h"
#include "tools/sevemu-owner/owner.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <openssl/sha.h>
#include <variant>

using namespace sevemu;
using namespace sevemu::test;
using namespace sevemu::cpu::svm;

namespace {

// es_guest.S's layout and entry points.
constexpr uint64_t kCode = 0x1000, kCodeSize = 0x2000, kGhcb = 0x3000, kScratch = 0x4000, kOut = 0x5000;
constexpr uint64_t kTables = 0x8000, kTablesSize = 0x4000;
constexpr uint64_t kEntryMsrProtocol = 0x000, kEntryApResetHold = 0x200, kEntryNae = 0x400, kEntryBad = 0xC00,
                   kEntryVc = 0x1200;
constexpr uint64_t kGdt = kCode + 0x1F00; // null, 64-bit code 0x08, data 0x10
constexpr uint64_t kMmioPage = 0x1F0000;  // mapped shared in the guest's tables, outside every memory slot
constexpr uint32_t kPolicyEs = 1u << 2; // SEV policy bit 2: ES required (SEV API 55766 §3)

Bytes guest_binary()
{
    char const* root = std::getenv("SEVEMU_BUILD_ROOT");
    REQUIRE(root);
    std::ifstream f(std::string(root) + "/tests/emulator/vmm/es_guest.bin", std::ios::binary);
    REQUIRE(f.good());
    Bytes b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    REQUIRE(b.size() == kCodeSize);
    return b;
}

template <class T>
T expect_exit(VcpuExit const& e)
{
    if (auto const* err = std::get_if<ExitInternalError>(&e))
        FAIL("internal error exit: " << err->reason);
    INFO("the exit is variant alternative " << e.index());
    REQUIRE(std::holds_alternative<T>(e));
    return std::get<T>(e);
}

void put64(Bytes& b, size_t off, uint64_t v) { std::memcpy(b.data() + off, &v, 8); }

// An SEV-ES VM with 16 pages of RAM at GPA 0, the guest binary at 0x1000, identity-mapping page
// tables at 0x8000 (every page private except the GHCB and the scratch page), launched by the
// owner's session with policy ES.
struct EsGuest {
    Host& h;
    Vm vm;
    Spa ram;
    static constexpr uint32_t kPages = 16;
    std::vector<std::unique_ptr<Vcpu>> vcpus;
    std::optional<owner::Session> session;
    Bytes measurement;

    explicit EsGuest(Host& host)
        : h(host)
        , vm(*host.sev, KVM_X86_SEV_ES_VM)
    {
        kvm_sev_init init {}; // ghcb_version 0: KVM's default for SEV-ES guests, 2
        REQUIRE(op(vm, KVM_SEV_INIT2, h.user_struct(init)) == 0);
        REQUIRE(vm.sev().es_active);
        auto r = h.host->alloc_pages(kPages);
        REQUIRE(r.has_value());
        ram = *r;
        REQUIRE(h.host->copy_to(direct_map(ram), Bytes(kPages * kPageSize, 0)).has_value());
        kvm_userspace_memory_region region { 0, 0, 0, kPages * kPageSize, direct_map(ram).value };
        REQUIRE(vm.set_user_memory_region(region) == 0);
        write(kCode, guest_binary());
        uint64_t c = 1ull << cpu_model_info(CpuModel::Milan).c_bit;
        put(kTables, 0x9000 | 3 | c);
        put(0x9000, 0xA000 | 3 | c);
        put(0xA000, 0xB000 | 3 | c);
        for (uint64_t p = 0; p < kPages; ++p) {
            bool shared = p << 12 == kGhcb || p << 12 == kScratch;
            put(0xB000 + 8 * p, (p << 12) | 3 | (shared ? 0 : c));
        }
        put(0xB000 + 8 * (kMmioPage >> 12), kMmioPage | 3); // MMIO is shared
    }
    void write(uint64_t gpa, std::span<uint8_t const> bytes) { REQUIRE(h.host->copy_to(direct_map(ram + gpa), bytes).has_value()); }
    void put(uint64_t gpa, uint64_t v)
    {
        Bytes b(8);
        put64(b, 0, v);
        write(gpa, b);
    }
    Vcpu& add_vcpu(uint64_t entry)
    {
        auto v = Vcpu::create(vm, uint32_t(vcpus.size()));
        REQUIRE(v.has_value());
        Vcpu& vc = **v;
        vcpus.push_back(std::move(*v));
        // Long mode at CPL 0, CR3 with the C-bit (the PML4 is private), a stack.
        auto& s = vc.state();
        s.cs = VmcbSeg { 0x08, 0xA9B, 0xFFFFFFFF, 0 };
        s.ds = s.es = s.ss = s.fs = s.gs = VmcbSeg { 0x10, 0xC93, 0xFFFFFFFF, 0 };
        s.cr0 = 0x80000011;
        s.cr4 = 1u << 5;
        s.efer = (1u << 12) | (1u << 10) | (1u << 8);
        s.cr3 = kTables | (1ull << cpu_model_info(CpuModel::Milan).c_bit);
        s.rip = kCode + entry;
        s.rsp = 0x7FF0;
        s.gdtr = VmcbSeg { 0, 0, 0x17, kGdt };
        vc.gprs()[3] = 0xB0B0B0B0B0B0B0B0ull; // RBX, to see it land in the VMSA
        vc.set_cpuid({ { 0x8000001F, 0, 0x0000000B, 0x0000A173, 509, 100 }, { 0, 0, 0x10, 0x68747541, 0x444D4163, 0x69746E65 } });
        return vc;
    }
    // LAUNCH_START (the owner's session, policy ES), LAUNCH_UPDATE_DATA of the code and the
    // tables, LAUNCH_UPDATE_VMSA, LAUNCH_MEASURE, LAUNCH_FINISH.
    void launch()
    {
        session.emplace(*owner::make_session(h.export_pdh(), kPolicyEs));
        Hva dh = h.user_buffer(session->godh_cert), blob = h.user_buffer(session->session_blob);
        kvm_sev_launch_start start {};
        start.policy = kPolicyEs;
        start.dh_uaddr = dh.value;
        start.dh_len = uint32_t(session->godh_cert.size());
        start.session_uaddr = blob.value;
        start.session_len = uint32_t(session->session_blob.size());
        REQUIRE(op(vm, KVM_SEV_LAUNCH_START, h.user_struct(start)) == 0);
        kvm_sev_launch_update_data code { direct_map(ram + kCode).value, uint32_t(kCodeSize) };
        REQUIRE(op(vm, KVM_SEV_LAUNCH_UPDATE_DATA, h.user_struct(code)) == 0);
        kvm_sev_launch_update_data tables { direct_map(ram + kTables).value, uint32_t(kTablesSize) };
        REQUIRE(op(vm, KVM_SEV_LAUNCH_UPDATE_DATA, h.user_struct(tables)) == 0);
        uint32_t error = 0;
        REQUIRE(op(vm, KVM_SEV_LAUNCH_UPDATE_VMSA, Hva(0), &error) == 0);
        Hva m = h.user_buffer({}, 48);
        REQUIRE(op(vm, KVM_SEV_LAUNCH_MEASURE, h.user_struct(kvm_sev_launch_measure { m.value, 48 })) == 0);
        measurement = h.read_user(m, 48);
        REQUIRE(op(vm, KVM_SEV_LAUNCH_FINISH, Hva(0)) == 0);
    }
    mmu::KeyId key() const { return mmu::KeyId::slot(vm.sev().asid); }
    // Result word n of the guest (private memory, read with the guest's key).
    uint64_t out(unsigned n)
    {
        Bytes b(8);
        REQUIRE(h.mc->read(ram + kOut + 8 * n, b, key()).has_value());
        uint64_t v;
        std::memcpy(&v, b.data(), 8);
        return v;
    }
};

struct Rig {
    Host h;
    NoIo io;
    cpu::Cpu cpu { *h.mc, CpuModel::Milan, io };
    CpuExecutor exec { cpu, 1'000'000 };
};

// The VMSA as KVM's sev_es_sync_vmsa() lays it out, built here from the offsets of Linux's
// struct sev_es_save_area (arch/x86/include/asm/svm.h) and the APM's VMSA table, not from
// sevemu's Vmsa struct.
Bytes expected_vmsa(VmcbSaveArea const& save, GuestGprs const& gprs, bool fpu)
{
    Bytes v(4096, 0);
    std::memcpy(v.data(), &save, 0x2E8); // "memcpy(save, &svm->vmcb->save, sizeof(svm->vmcb->save))"
    size_t const gpr_off[16] = { 0, 0x308, 0x310, 0x318, 0, 0x328, 0x330, 0x338, 0x340, 0x348, 0x350, 0x358, 0x360,
        0x368, 0x370, 0x378 };
    for (unsigned i = 0; i < 16; ++i)
        if (gpr_off[i])
            put64(v, gpr_off[i], gprs[i]);
    put64(v, 0x3E8, 1); // XCR0 = x87
    if (fpu) {
        uint32_t mxcsr = 0x1F80;
        std::memcpy(v.data() + 0x408, &mxcsr, 4);
        uint16_t fcw = 0x37F;
        std::memcpy(v.data() + 0x410, &fcw, 2);
    }
    return v;
}

} // namespace

TEST_CASE("SEV-ES vCPU: the VMCB as sev_es_init_vmcb sets it, registers staged until the VMSA is encrypted", "[vmm][sev-es]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(kEntryMsrProtocol);
    REQUIRE(v.sev_es());
    auto const& c = v.vmcb().control;
    CHECK((c.nested_ctl & (nested_ctl::SEV_ENABLE | nested_ctl::SEV_ES_ENABLE | nested_ctl::NP_ENABLE)) ==
          (nested_ctl::SEV_ENABLE | nested_ctl::SEV_ES_ENABLE | nested_ctl::NP_ENABLE));
    CHECK((c.virt_ext & virt_ext::LBR_CTL_ENABLE) != 0);
    CHECK(c.vmsa_pa == v.vmsa_address().value);
    CHECK(c.asid == g.vm.sev().asid);
    CHECK(c.asid < r.h.sev->config().min_sev_asid); // an SEV-ES ASID
    auto bit = [&](Intercept i) { return (c.intercepts[unsigned(i) / 32] >> (unsigned(i) % 32)) & 1; };
    CHECK_FALSE(bit(Intercept::CR0_READ));
    CHECK_FALSE(bit(Intercept::CR4_WRITE));
    CHECK_FALSE(bit(Intercept::XSETBV));
    CHECK(bit(Intercept::TRAP_EFER_WRITE));
    CHECK(bit(Intercept::DR7_WRITE));
    CHECK(bit(Intercept::VMMCALL));
    // The GHCB MSR at RESET holds the SEV_INFO response: max 2, min 1, C-bit 51.
    CHECK(c.ghcb_gpa == ((2ull << 48) | (1ull << 32) | (51ull << 24) | 1));

    // Before LAUNCH_UPDATE_VMSA the VMM's registers are a staging copy it may read and write.
    VmcbSaveArea save {};
    GuestGprs gprs {};
    CHECK(v.get_registers(save, gprs) == 0);
    CHECK(save.rip == kCode);
    // KVM_RUN before the VMSA is encrypted is refused.
    CHECK(std::holds_alternative<ExitInternalError>(v.run(r.exec)));
    // The image matches the layout computed independently (INIT2 VM: FPU state included).
    Vmsa img = v.vmsa_image();
    Bytes img_bytes(reinterpret_cast<uint8_t const*>(&img), reinterpret_cast<uint8_t const*>(&img) + 4096);
    CHECK(img_bytes == expected_vmsa(v.state(), v.gprs(), true));
}

TEST_CASE("SEV-ES launch: the VMSA becomes ciphertext, the measurement covers it, the state is protected", "[vmm][sev-es]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v0 = g.add_vcpu(kEntryMsrProtocol);
    Vcpu& v1 = g.add_vcpu(kEntryApResetHold);
    Bytes image0 = expected_vmsa(v0.state(), v0.gprs(), true);
    Bytes image1 = expected_vmsa(v1.state(), v1.gprs(), true);
    Bytes code = guest_binary();
    Bytes tables(kTablesSize);
    REQUIRE(r.h.mc->read(g.ram + kTables, tables, mmu::KeyId::none()).has_value());
    g.launch();

    for (auto [v, image] : { std::pair<Vcpu*, Bytes*> { &v0, &image0 }, { &v1, &image1 } }) {
        CHECK(v->guest_state_protected());
        Bytes host_view(4096), guest_view(4096);
        REQUIRE(r.h.mc->read(v->vmsa_address(), host_view, mmu::KeyId::none()).has_value());
        REQUIRE(r.h.mc->read(v->vmsa_address(), guest_view, g.key()).has_value());
        CHECK(host_view != *image); // the hypervisor's view: ciphertext
        CHECK(guest_view == *image); // the memory controller with the guest's key: the plaintext
        VmcbSaveArea save {};
        GuestGprs gprs {};
        CHECK(v->get_registers(save, gprs) == -EINVAL); // guest_state_protected
        CHECK(v->set_registers(save, gprs) == -EINVAL);
    }
    // A second LAUNCH_UPDATE_VMSA is refused (sev_es_sync_vmsa on a protected vCPU).
    CHECK(op(g.vm, KVM_SEV_LAUNCH_UPDATE_VMSA, Hva(0)) == -EINVAL);

    // The launch digest: SHA-256 over what the firmware measured, in order (the code, the
    // tables, then each VMSA), recomputed with OpenSSL and checked by the owner's library.
    Bytes all;
    for (Bytes const* b : { &code, &tables, &image0, &image1 })
        all.insert(all.end(), b->begin(), b->end());
    owner::Sha256Digest digest {};
    SHA256(all.data(), all.size(), digest.data());
    auto status = r.h.psp->platform_status();
    REQUIRE(status.has_value());
    owner::PlatformVersion version { status->api_major, status->api_minor, status->build };
    CHECK(owner::verify_measurement(g.session->keys.tik, g.measurement, version, kPolicyEs, digest).has_value());
    // A VMSA one byte off gives another digest: the measurement does cover the registers.
    all.back() ^= 1;
    SHA256(all.data(), all.size(), digest.data());
    CHECK_FALSE(owner::verify_measurement(g.session->keys.tik, g.measurement, version, kPolicyEs, digest).has_value());
}

TEST_CASE("KVM_SEV_LAUNCH_UPDATE_VMSA is refused where KVM refuses it", "[vmm][sev-es]")
{
    Rig r;
    // A plain SEV VM has no VMSAs.
    Vm sev(*r.h.sev, KVM_X86_DEFAULT_VM);
    REQUIRE(op(sev, KVM_SEV_INIT, Hva(0)) == 0);
    CHECK(op(sev, KVM_SEV_LAUNCH_UPDATE_VMSA, Hva(0)) == -ENOTTY);
    // An ES vCPU with debug registers armed (DR7 beyond DR7_FIXED_1) is not encrypted.
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(0);
    v.state().dr7 = 0x401;
    kvm_sev_launch_start start {};
    start.policy = kPolicyEs;
    REQUIRE(op(g.vm, KVM_SEV_LAUNCH_START, r.h.user_struct(start)) == 0);
    CHECK(op(g.vm, KVM_SEV_LAUNCH_UPDATE_VMSA, Hva(0)) == -EINVAL);
    CHECK_FALSE(v.guest_state_protected());
}

TEST_CASE("SEV-ES guest: the GHCB MSR protocol (SEV info, CPUID, features) and a termination request", "[vmm][sev-es][run]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(kEntryMsrProtocol);
    g.launch();
    CHECK_FALSE(v.ready_for_interrupt_injection());
    auto term = expect_exit<ExitSevTerm>(v.run(r.exec));
    CHECK(term.reason_set == 1);
    CHECK(term.reason_code == 0x23);
    CHECK((term.ghcb_msr & 0xFFF) == 0x100);
    CHECK(g.out(0) == ((2ull << 48) | (1ull << 32) | (51ull << 24) | 0x001)); // SEV_INFO: versions 1..2, C-bit 51
    CHECK(g.out(1) == ((0x0000A173ull << 32) | (1u << 30) | 0x005));         // CPUID 8000_001F EBX
    CHECK(g.out(2) == ((0x444D4163ull << 32) | (2u << 30) | 0x005));         // CPUID 0 ECX ("cAMD")
    CHECK(g.out(3) == 0x081);                                                // no hypervisor features for SEV-ES
    CHECK(g.out(4) == 3);                                                    // SEV_STATUS: SEV | SEV-ES
    // The guest ran STI: IF comes from VMCB int_state (GUEST_INTERRUPT_MASK), not from the
    // VMM's stale save area, where RFLAGS is still the 0x2 it staged.
    CHECK(v.state().rflags == 2);
    CHECK(v.ready_for_interrupt_injection());
}

TEST_CASE("SEV-ES guest: IOIO, MMIO, CPUID, RDMSR, string I/O and VMMCALL through the GHCB page", "[vmm][sev-es][run]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(kEntryNae);
    g.launch();
    auto out = expect_exit<ExitIo>(v.run(r.exec));
    CHECK((out.port == 0x80 && out.size == 4 && !out.in && out.value == 0xC0FFEE11));
    auto in = expect_exit<ExitIo>(v.run(r.exec));
    CHECK((in.port == 0x82 && in.size == 1 && in.in));
    v.complete_io_in(0x5A);
    auto w = expect_exit<ExitMmio>(v.run(r.exec));
    CHECK((w.gpa == 0xFEB00010 && w.size == 8 && w.is_write && w.data == 0x1122334455667788ull));
    auto rd = expect_exit<ExitMmio>(v.run(r.exec));
    CHECK((rd.gpa == 0xFEB00020 && rd.size == 4 && !rd.is_write));
    // KVM_RUN before the read is answered is refused, and changes nothing.
    CHECK(std::holds_alternative<ExitInternalError>(v.run(r.exec)));
    v.complete_mmio_read(0xDEADBEEF);
    std::string s;
    for (int i = 0; i < 3; ++i) {
        auto o = expect_exit<ExitIo>(v.run(r.exec));
        CHECK((o.port == 0xE9 && o.size == 1 && !o.in));
        s += char(o.value);
    }
    CHECK(s == "abc");
    for (uint32_t word : { 0x1111u, 0x2222u }) {
        auto i2 = expect_exit<ExitIo>(v.run(r.exec));
        CHECK((i2.port == 0x60 && i2.size == 2 && i2.in));
        v.complete_io_in(word);
    }
    auto hc = expect_exit<ExitHypercall>(v.run(r.exec));
    CHECK(hc.nr == KVM_HC_MAP_GPA_RANGE);
    CHECK(hc.args == std::array<uint64_t, 3> { 0x4000, 1, 0 });
    v.complete_hypercall(0);
    expect_exit<ExitHlt>(v.run(r.exec));

    CHECK(g.out(0) == 0);                   // OUT: SW_EXITINFO1 = 0, success
    CHECK(g.out(1) == 0x5A);                // IN AL: RAX in the GHCB (RAX was not given: 0)
    CHECK(g.out(2) == 0x0000000B);          // CPUID 8000_001F EAX from KVM_SET_CPUID2's table
    CHECK(g.out(3) == 0x0000A173);          // EBX
    CHECK(g.out(4) == 0xFEE00800);          // IA32_APIC_BASE: default, BSP
    CHECK(g.out(5) == 0);
    CHECK(g.out(6) == 1);                   // an unknown MSR: "inject an exception" ...
    CHECK(g.out(7) == 0x8000030D);          // ... #GP: X86_TRAP_GP | SVM_EVTINJ_TYPE_EXEPT | SVM_EVTINJ_VALID
    CHECK(g.out(8) == 0);                   // MMIO write: success
    CHECK(g.out(9) == 0xDEADBEEF);          // MMIO read: the answer in the scratch page
    CHECK(g.out(10) == 0x22221111);         // INSW x2 into the scratch page
    CHECK(g.out(11) == 0);                  // the hypercall's return value
    CHECK(g.out(12) == 0x9000);             // AP jump table: set, then read back
    CHECK(g.vm.ap_jump_table() == 0x9000);
    // The reply marks RAX, RBX, RCX, RDX, SW_EXITINFO1/2 valid (sev_es_sync_to_ghcb, ghcb_set_*).
    CHECK(g.out(13) == (1ull << 63));
    CHECK(g.out(14) == ((1ull << (97 - 64)) | (1ull << (98 - 64)) | (1ull << (99 - 64)) | (1ull << (115 - 64)) | (1ull << (116 - 64))));
}

TEST_CASE("SEV-ES guest: malformed GHCB requests get KVM's error replies, then a termination NAE", "[vmm][sev-es][run]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(kEntryBad);
    g.launch();
    // No request reaches the VMM: every one is answered in the GHCB.
    auto term = expect_exit<ExitSevTerm>(v.run(r.exec));
    CHECK(term.ghcb_msr == kGhcb);
    CHECK(term.reason_set == 0);
    CHECK(term.reason_code == 1);
    uint64_t const want[] = {
        ghcb_err::MISSING_INPUT,        // OUT without RAX valid
        ghcb_err::INVALID_EVENT,        // an SNP-only exit code
        ghcb_err::INVALID_SCRATCH_AREA, // across the end of the shared buffer
        ghcb_err::INVALID_SCRATCH_AREA, // 17 pages outside the GHCB
        ghcb_err::MISSING_INPUT,        // MMIO without SW_SCRATCH valid
        ghcb_err::INVALID_USAGE,        // GHCB usage 1
        ghcb_err::MISSING_INPUT,        // SW_EXITINFO1 not valid
        ghcb_err::INVALID_INPUT,        // AP jump table request 7
        ghcb_err::INVALID_SCRATCH_AREA, // scratch GPA 0
        ghcb_err::INVALID_SCRATCH_AREA, // inside the GHCB, before the shared buffer
    };
    for (unsigned i = 0; i < std::size(want); ++i) {
        INFO("request " << i);
        CHECK(g.out(2 * i) == 2);
        CHECK(g.out(2 * i + 1) == want[i]);
    }
}

TEST_CASE("SEV-ES AP: first SIPI starts it from its VMSA, AP reset hold waits for the next SIPI", "[vmm][sev-es][run]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(kEntryApResetHold);
    g.launch();
    v.deliver_sipi(0x12); // the first SIPI: the state is the launched VMSA's, nothing changes
    Bytes before(4096), after(4096);
    REQUIRE(r.h.mc->read(v.vmsa_address(), before, mmu::KeyId::none()).has_value());
    v.init_event();       // INIT does not touch the encrypted state
    REQUIRE(r.h.mc->read(v.vmsa_address(), after, mmu::KeyId::none()).has_value());
    CHECK(before == after);

    expect_exit<ExitApResetHold>(v.run(r.exec));
    CHECK(v.in_ap_reset_hold());
    expect_exit<ExitApResetHold>(v.run(r.exec)); // not released: the guest asks again
    v.deliver_sipi(0x12);
    CHECK_FALSE(v.in_ap_reset_hold());
    // Released from the NAE hold; then the MSR-protocol hold, released the same way.
    expect_exit<ExitApResetHold>(v.run(r.exec));
    v.deliver_sipi(0x12);
    expect_exit<ExitHlt>(v.run(r.exec));
    CHECK(g.out(0) == 2);       // two rounds of the NAE hold
    CHECK(g.out(1) == 1);       // one of the MSR-protocol hold
    CHECK(g.out(2) == 0x1007);  // AP_RESET_HOLD_RESP with GHCBData = 1
}

TEST_CASE("VMGEXIT outside an SEV-ES guest is VMMCALL", "[vmm][sev-es][run]")
{
    Rig r;
    Vm vm(*r.h.sev, KVM_X86_DEFAULT_VM);
    auto ram = r.h.host->alloc_pages(4);
    REQUIRE(ram.has_value());
    kvm_userspace_memory_region region { 0, 0, 0, 4 * kPageSize, direct_map(*ram).value };
    REQUIRE(vm.set_user_memory_region(region) == 0);
    // mov eax, 12; mov ebx, 0x2000; mov ecx, 1; xor edx, edx; rep vmmcall (VMGEXIT); hlt
    Bytes code = { 0xB8, 0x0C, 0x00, 0x00, 0x00, 0xBB, 0x00, 0x20, 0x00, 0x00, 0xB9, 0x01, 0x00, 0x00, 0x00, 0x31, 0xD2,
        0xF3, 0x0F, 0x01, 0xD9, 0xF4 };
    REQUIRE(r.h.host->copy_to(direct_map(*ram + 0x1000), code).has_value());
    auto v = Vcpu::create(vm, 0);
    REQUIRE(v.has_value());
    auto& s = (*v)->state();
    s.cs = VmcbSeg { 0x08, 0xC9B, 0xFFFFFFFF, 0 };
    s.ds = s.es = s.ss = VmcbSeg { 0x10, 0xC93, 0xFFFFFFFF, 0 };
    s.cr0 = 0x11;
    s.rip = 0x1000;
    auto hc = expect_exit<ExitHypercall>((*v)->run(r.exec));
    CHECK(hc.nr == KVM_HC_MAP_GPA_RANGE);
    CHECK(hc.args == std::array<uint64_t, 3> { 0x2000, 1, 0 });
}

TEST_CASE("SEV-ES guest: intercepted instructions become #VC, which the guest serves through the GHCB", "[vmm][sev-es][run]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(kEntryVc);
    g.launch();
    // The MMIO load: a first automatic #NPF maps the page for #VC (MMIO caching), the second
    // access is #VC 0x400 and the handler asks for a 4-byte MMIO read.
    auto rd = expect_exit<ExitMmio>(v.run(r.exec));
    CHECK((rd.gpa == kMmioPage + 0x40 && rd.size == 4 && !rd.is_write));
    v.complete_mmio_read(0x0BADF00D);
    expect_exit<ExitHlt>(v.run(r.exec));
    CHECK(g.out(4) == 0x400); // #VC error codes: the exit code that would have been (NPF, RSVD)
    CHECK(g.out(5) == 0x72);  // CPUID
    CHECK(g.out(6) == 0x37);  // DR7 write
    CHECK(g.out(1) == 7);     // three #VCs
    CHECK(g.out(2) == 0x0BADF00D);
    CHECK(g.out(3) == 0x0000A173); // CPUID 8000_001F EBX from the VMM's table
}

TEST_CASE("KVM_SEV_ES_INIT: GHCB protocol 1 only, and no FPU state in the VMSA (older measurements)", "[vmm][sev-es]")
{
    Rig r;
    Vm vm(*r.h.sev, KVM_X86_DEFAULT_VM);
    REQUIRE(op(vm, KVM_SEV_ES_INIT, Hva(0)) == 0);
    auto ram = r.h.host->alloc_pages(1);
    REQUIRE(ram.has_value());
    kvm_userspace_memory_region region { 0, 0, 0, kPageSize, direct_map(*ram).value };
    REQUIRE(vm.set_user_memory_region(region) == 0);
    auto v = Vcpu::create(vm, 0);
    REQUIRE(v.has_value());
    CHECK((*v)->vmcb().control.ghcb_gpa == ((1ull << 48) | (1ull << 32) | (51ull << 24) | 1));
    Vmsa img = (*v)->vmsa_image();
    Bytes img_bytes(reinterpret_cast<uint8_t const*>(&img), reinterpret_cast<uint8_t const*>(&img) + 4096);
    CHECK(img_bytes == expected_vmsa((*v)->state(), (*v)->gprs(), false));
    // The public function is the same computation (what the VMM and the owner's tool call).
    Vmsa pub = sev_es_sync_vmsa((*v)->state(), (*v)->gprs(), VmsaSyncExtras {});
    CHECK(std::memcmp(&pub, &img, sizeof img) == 0);
}

TEST_CASE("SEV-ES VMGEXIT handling on its own: hostile GHCB MSR values and GHCB addresses", "[vmm][sev-es]")
{
    Rig r;
    EsGuest g(r.h);
    Vcpu& v = g.add_vcpu(0);
    Vmcb vmcb = v.vmcb();
    vmcb.control.exit_code = exitcode::SVM_EXIT_VMGEXIT;
    // An MSR-protocol request KVM does not know: the MSR is left as it is, the guest resumes.
    vmcb.control.ghcb_gpa = 0xABCDE0FF;
    CHECK_FALSE(v.handle_vmgexit(vmcb).has_value());
    CHECK(vmcb.control.ghcb_gpa == 0xABCDE0FF);
    // GHCB GPA registration is SNP's: a non-SNP guest asking for it is terminated (current KVM).
    vmcb.control.ghcb_gpa = (0x3ull << 12) | 0x012;
    auto t = v.handle_vmgexit(vmcb);
    REQUIRE(t.has_value());
    CHECK(std::holds_alternative<ExitSevTerm>(*t));
    // A CPUID request for a leaf the VMM's table lacks: zeros, the register selector kept.
    vmcb.control.ghcb_gpa = (0x40000000ull << 32) | (3u << 30) | 0x004;
    CHECK_FALSE(v.handle_vmgexit(vmcb).has_value());
    CHECK(vmcb.control.ghcb_gpa == ((3u << 30) | 0x005));
    // No GHCB (0), or one outside guest memory: back to the guest, nothing read or written.
    for (uint64_t gpa : { 0ull, 0x7FFF0000ull, 0xFFFFFFFFF000ull }) {
        vmcb.control.ghcb_gpa = gpa;
        CHECK_FALSE(v.handle_vmgexit(vmcb).has_value());
        CHECK(vmcb.control.ghcb_gpa == gpa);
    }
    // A GHCB page of random bytes (whatever the hypervisor's view of a private page is): an error
    // reply or an exit, never a crash.
    for (uint8_t seed = 0; seed < 64; ++seed) {
        Bytes junk = pattern(kPageSize, seed);
        junk[0x3F0 + 114 / 8] |= 0x7C; // SW_EXITCODE .. SW_SCRATCH marked valid, sometimes
        put64(junk, 0x390, seed % 2 ? 0x7B : 0x80000001 + seed % 5);
        std::memset(junk.data() + 0xFFC, 0, 4); // GHCB usage 0
        g.write(kGhcb, junk);
        vmcb.control.ghcb_gpa = kGhcb;
        (void)v.handle_vmgexit(vmcb);
    }
}
