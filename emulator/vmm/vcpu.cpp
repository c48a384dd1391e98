// The vCPU: VMCB set-up (Linux arch/x86/kvm/svm/svm.c init_vmcb), nested page tables for the
// VM's memory slots, and exit handling (svm_invoke_exit_handler and its handlers).
#include "emulator/vmm/vcpu.h"

#include <algorithm>
#include <cerrno>
#include <fmt/format.h>

namespace sevemu::vmm {

using namespace cpu::svm;

namespace {
constexpr uint64_t kPresent = 1, kWrite = 2, kUser = 4;
constexpr uint64_t kAddrMask = 0x000F'FFFF'FFFF'F000ull;
constexpr size_t kIopmPages = 3, kMsrpmPages = 2;
constexpr unsigned RAX = 0, RCX = 1, RDX = 2, RBX = 3;
constexpr uint32_t kMsrApicBase = 0x1B;
constexpr uint64_t kApicBaseExtd = 1u << 10;

// MSRs that live in the VMCB save area (or are the CPU's own, like SEV_STATUS): the guest reads
// and writes them directly; everything else is intercepted. KVM passes through a similar set
// (svm.c direct_access_msrs). SEV_STATUS is never intercepted (APM vol 2 §15.34.10).
constexpr uint32_t kPassThrough[] = {
    0xC0000080, // EFER (saved in the VMCB)
    0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, // STAR, LSTAR, CSTAR, SFMASK
    0xC0000100, 0xC0000101, 0xC0000102, // FS_BASE, GS_BASE, KERNEL_GS_BASE
    0x00000174, 0x00000175, 0x00000176, // SYSENTER_CS/ESP/EIP
    0x00000277, // PAT
    0x00000010, // TSC
    0xC0000103, // TSC_AUX
    0xC0010131, // SEV_STATUS
    0xC0010130, // SEV_ES_GHCB: the guest's own (KVM's direct_access_msrs, always passed through)
    // The MTRRs (MTRRcap, the variable and fixed ranges, MTRRdefType). KVM emulates them in
    // software (arch/x86/kvm/mtrr.c); sevemu's host has no cache types to protect, so the guest
    // uses the core's own, which the boot layer sets as firmware would (emulator/boot.h).
    0x000000FE, 0x00000200, 0x00000201, 0x00000202, 0x00000203, 0x00000204, 0x00000205, 0x00000206,
    0x00000207, 0x00000208, 0x00000209, 0x0000020A, 0x0000020B, 0x0000020C, 0x0000020D, 0x0000020E,
    0x0000020F, 0x00000250, 0x00000258, 0x00000259, 0x00000268, 0x00000269, 0x0000026A, 0x0000026B,
    0x0000026C, 0x0000026D, 0x0000026E, 0x0000026F, 0x000002FF,
};

void set_intercept(VmcbControlArea& c, Intercept i) { c.intercepts[unsigned(i) / 32] |= 1u << (unsigned(i) % 32); }

// The AMD platform MSRs KVM answers in its common code (Linux 6.1 arch/x86/kvm/x86.c
// kvm_get_msr_common / kvm_set_msr_common) for a guest with the default (zero) HWCR: reads of 0
// and ignored writes, so that a guest kernel's unguarded rdmsr/wrmsr of them (Linux's
// early_init_amd reads SYSCFG, bsp_init_amd HWCR, amd_bus_cpu_online writes NB_CFG on every
// CPU) behaves as on a KVM host instead of taking #GP.
bool reads_as_zero(uint32_t msr)
{
    switch (msr) {
    case 0xC0010010: // SYSCFG
    case 0xC0010015: // HWCR (KVM's msr_hwcr, 0 until the VMM sets it)
    case 0xC001001F: // NB_CFG
    case 0xC0010055: // INT_PENDING_MSG
    case 0xC0010058: // MMIO_CONF_BASE (family 10h)
    case 0xC0010112: // TSEG_ADDR
    case 0xC0010113: // TSEG_MASK
    case 0xC0011022: // DC_CFG
    case 0xC001102A: // BU_CFG2
    case 0xC001102C: // EX_CFG (family 15h)
        return true;
    default:
        return false;
    }
}

bool ignores_write(uint32_t msr)
{
    switch (msr) {
    case 0xC001001F: // NB_CFG
    case 0xC0010020: // PATCH_LOADER
    case 0xC0011022: // DC_CFG
    case 0xC001102A: // BU_CFG2
    case 0xC001102C: // EX_CFG
        return true;
    default:
        return false;
    }
}

// Power-on (and INIT) register state of a vCPU (KVM's kvm_vcpu_reset via init_vmcb; APM vol 2
// §14.1.3 Table 14-1): real mode at F000:FFF0.
void set_power_on_registers(VmcbSaveArea& s)
{
    auto seg = [](uint16_t sel, uint64_t base, uint16_t attrib) { return VmcbSeg { sel, attrib, 0xFFFF, base }; };
    s.cs = seg(0xF000, 0xFFFF0000, seg_attrib::P | seg_attrib::S | 0xB);
    s.ds = s.es = s.fs = s.gs = s.ss = seg(0, 0, seg_attrib::P | seg_attrib::S | 0x3);
    s.gdtr = { 0, 0, 0xFFFF, 0 };
    s.idtr = { 0, 0, 0xFFFF, 0 };
    s.ldtr = seg(0, 0, seg_attrib::P | 0x2);
    s.tr = seg(0, 0, seg_attrib::P | 0x3);
    s.cpl = 0;
    s.cr0 = 0x60000010; // CD | NW | ET
    s.cr2 = s.cr3 = s.cr4 = 0;
    s.efer = 1u << 12;  // EFER.SVME, which VMRUN requires of the guest EFER
    s.rflags = 2;
    s.rip = 0xFFF0;
    s.rsp = s.rax = 0;
    s.dr6 = 0xFFFF0FF0;
    s.dr7 = 0x400;
}
} // namespace

Result<std::unique_ptr<Vcpu>, int> Vcpu::create(Vm& vm, uint32_t id)
{
    std::unique_ptr<Vcpu> v(new Vcpu(vm, id));
    auto& host = vm.host().psp().host();
    v->m_vmcb_page = TRY(host.alloc_pages(1));
    v->m_hsave_page = TRY(host.alloc_pages(1));
    v->m_iopm = TRY(host.alloc_pages(kIopmPages));
    v->m_msrpm = TRY(host.alloc_pages(kMsrpmPages));
    // Every port is intercepted; MSRs outside the pass-through set too.
    std::vector<uint8_t> ones(kIopmPages * kPageSize, 0xFF);
    TRY(host.copy_to(direct_map(v->m_iopm), ones));
    std::vector<uint8_t> msrpm(kMsrpmPages * kPageSize, 0xFF);
    for (uint32_t msr : kPassThrough) {
        // APM vol 2 §15.11: three 2 KiB ranges, 2 bits (read, write) per MSR.
        uint32_t base = msr <= 0x1FFF ? 0x000 : (msr >= 0xC0010000 ? 0x1000 : 0x800);
        uint32_t bit = (msr & 0x1FFF) * 2;
        msrpm[base + bit / 8] &= uint8_t(~(3u << (bit % 8)));
    }
    TRY(host.copy_to(direct_map(v->m_msrpm), msrpm));
    v->m_npt = vm.shared_nested_page_tables().lock();
    if (!v->m_npt) {
        v->m_npt = TRY(NestedPageTables::build(vm));
        vm.shared_nested_page_tables() = v->m_npt;
    }

    auto& c = v->m_vmcb.control;
    for (Intercept i : { Intercept::CPUID, Intercept::HLT, Intercept::IOIO_PROT, Intercept::MSR_PROT, Intercept::SHUTDOWN,
             Intercept::VMRUN, Intercept::VMMCALL, Intercept::VMLOAD, Intercept::VMSAVE, Intercept::STGI, Intercept::CLGI,
             Intercept::SKINIT, Intercept::INVLPGA, Intercept::INTR, Intercept::NMI, Intercept::INVD, Intercept::RDPRU })
        set_intercept(c, i);
    c.iopm_base_pa = v->m_iopm.value;
    c.msrpm_base_pa = v->m_msrpm.value;
    c.nested_ctl = nested_ctl::NP_ENABLE;
    c.nested_cr3 = v->m_npt->root();
    auto const& sev = vm.sev();
    if (sev.active) {
        // The SEV enable bit and the VM's ASID (sev_init_vmcb); the key slot is the firmware's.
        c.nested_ctl |= nested_ctl::SEV_ENABLE;
        c.asid = sev.asid;
    } else {
        // A plain guest takes an ASID above the SEV range, one per vCPU.
        c.asid = vm.host().config().max_asid + 1 + id;
    }
    c.tlb_ctl = tlb_control::FLUSH_ASID;

    set_power_on_registers(v->m_vmcb.save);
    v->m_vmcb.save.g_pat = 0x0007040600070406ull;
    if (sev.active && sev.es_active) {
        // sev_es_vcpu_create(): a zeroed page of its own for the VMSA.
        v->m_es = true;
        v->m_vmsa_page = TRY(host.alloc_pages(1));
        TRY(host.copy_to(direct_map(v->m_vmsa_page), std::vector<uint8_t>(kPageSize, 0)));
        v->sev_es_init_vmcb();
    }
    vm.register_vcpu(v.get());
    return v;
}

Vcpu::~Vcpu()
{
    m_vm.unregister_vcpu(this);
    auto& host = m_vm.host().psp().host();
    if (m_es && m_vmsa_page.value) {
        // sev_free_vcpu(): lines the CPU wrote with the guest's key leave the cache first.
        if (m_guest_state_protected)
            m_vm.host().memory().clflush(m_vmsa_page);
        host.free_pages(m_vmsa_page, 1);
    }
    host.free_pages(m_vmcb_page, 1);
    host.free_pages(m_hsave_page, 1);
    host.free_pages(m_iopm, kIopmPages);
    host.free_pages(m_msrpm, kMsrpmPages);
}

NestedPageTables::~NestedPageTables()
{
    for (Spa p : m_pages)
        m_host.free_pages(p, 1);
}

// Nested page tables for every memory slot: GPA -> SPA, 4 KiB leaves, all accesses user
// (APM vol 2 §15.25.5), the nested C-bit clear (host memory is not SME-encrypted; QUIRKS.md).
Result<std::shared_ptr<NestedPageTables>, int> NestedPageTables::build(Vm& vm)
{
    auto& host = vm.host().psp().host();
    auto& mc = host.memory();
    std::shared_ptr<NestedPageTables> npt(new NestedPageTables(host));
    auto new_table = [&]() -> Result<Spa, int> {
        Spa t = TRY(host.alloc_pages(1));
        npt->m_pages.push_back(t);
        return t;
    };
    auto entry = [&](Spa table, unsigned index) -> Result<uint64_t, int> {
        uint8_t b[8];
        if (!mc.read(table + index * 8, b, mmu::KeyId::none()))
            return make_unexpected(-EFAULT);
        uint64_t v = 0;
        for (int i = 7; i >= 0; --i)
            v = v << 8 | b[i];
        return v;
    };
    auto set_entry = [&](Spa table, unsigned index, uint64_t v) -> Result<void, int> {
        uint8_t b[8];
        for (int i = 0; i < 8; ++i)
            b[i] = uint8_t(v >> (8 * i));
        if (!mc.write(table + index * 8, b, mmu::KeyId::none()))
            return make_unexpected(-EFAULT);
        return {};
    };
    Spa root = TRY(new_table());
    npt->m_root = root.value;
    for (auto const& [slot, r] : vm.memory_slots()) {
        for (uint64_t off = 0; off < r.memory_size; off += kPageSize) {
            uint64_t gpa = r.guest_phys_addr + off;
            auto spa = host.to_spa(Hva(r.userspace_addr + off), kPageSize);
            if (!spa)
                return make_unexpected(-EFAULT);
            Spa table = root;
            for (int level = 3; level > 0; --level) {
                unsigned index = (gpa >> (12 + 9 * level)) & 0x1FF;
                uint64_t e = TRY(entry(table, index));
                if (!(e & kPresent)) {
                    Spa next = TRY(new_table());
                    e = next.value | kPresent | kWrite | kUser;
                    TRY(set_entry(table, index, e));
                }
                table = Spa(e & kAddrMask);
            }
            uint64_t leaf = spa->value | kPresent | kUser | ((r.flags & 2) ? 0 : kWrite);
            TRY(set_entry(table, (gpa >> 12) & 0x1FF, leaf));
        }
    }
    return npt;
}

bool NestedPageTables::map_mmio(Gpa gpa)
{
    // Bit 50: above the 48 physical-address bits sevemu's CPU models implement (and below the
    // C-bit, 51), so reserved in every nested entry (APM vol 2 §5.3.5, §15.25.5) — as KVM's
    // shadow_mmio_value uses a reserved physical-address bit.
    constexpr uint64_t kMmioReserved = 1ull << 50;
    if (gpa.value >> 48)
        return false;
    auto& mc = m_host.memory();
    auto read = [&](Spa at) -> std::optional<uint64_t> {
        uint8_t b[8];
        if (!mc.read(at, b, mmu::KeyId::none()))
            return std::nullopt;
        uint64_t v = 0;
        for (int i = 7; i >= 0; --i)
            v = v << 8 | b[i];
        return v;
    };
    auto write = [&](Spa at, uint64_t v) {
        uint8_t b[8];
        for (int i = 0; i < 8; ++i)
            b[i] = uint8_t(v >> (8 * i));
        return bool(mc.write(at, b, mmu::KeyId::none()));
    };
    Spa table(m_root);
    for (int level = 3; level > 0; --level) {
        Spa at = table + ((gpa.value >> (12 + 9 * level)) & 0x1FF) * 8;
        auto e = read(at);
        if (!e)
            return false;
        if (!(*e & kPresent)) {
            auto next = m_host.alloc_pages(1);
            if (!next)
                return false;
            m_pages.push_back(*next);
            if (!m_host.copy_to(direct_map(*next), std::vector<uint8_t>(kPageSize, 0)))
                return false;
            *e = next->value | kPresent | kWrite | kUser;
            if (!write(at, *e))
                return false;
        } else if (*e & kMmioReserved) {
            return false;
        }
        table = Spa(*e & kAddrMask);
    }
    Spa leaf = table + ((gpa.value >> 12) & 0x1FF) * 8;
    auto e = read(leaf);
    if (!e || ((*e & kPresent) && !(*e & kMmioReserved)))
        return false; // a RAM page: not MMIO
    return write(leaf, kPresent | kWrite | kUser | kMmioReserved);
}

void Vcpu::inject_exception(Vmcb& vmcb, uint8_t vector, std::optional<uint32_t> error_code)
{
    vmcb.control.event_inj = encode_event(Event { vector, EventType::EXCEPTION, error_code });
    vmcb.control.event_inj_err = error_code.value_or(0);
}

void Vcpu::inject_gp(Vmcb& vmcb) { inject_exception(vmcb, 13, 0u); }

bool Vcpu::ready_for_interrupt_injection() const
{
    auto const& c = m_vmcb.control;
    // RFLAGS.IF: an SEV-ES guest's RFLAGS is in its encrypted VMSA; the CPU reports IF in
    // int_state's GUEST_INTERRUPT_MASK bit at #VMEXIT instead (APM vol 2 §15.35.6; KVM's
    // svm_interrupt_blocked reads that bit for SEV-ES guests).
    return guest_interrupts_enabled() && !(c.int_state & int_state::INTERRUPT_SHADOW) && !(c.event_inj & evtinj::VALID);
}

bool Vcpu::guest_interrupts_enabled() const
{
    return m_es ? bool(m_vmcb.control.int_state & int_state::GUEST_INTERRUPT_MASK) : bool(m_vmcb.save.rflags & (1u << 9));
}

bool Vcpu::inject_interrupt(uint8_t vector)
{
    if (!ready_for_interrupt_injection())
        return false;
    m_vmcb.control.event_inj = encode_event(Event { vector, EventType::INTR, std::nullopt });
    m_vmcb.control.event_inj_err = 0;
    return true;
}

// Nothing an INIT interrupted survives: no event being injected, no interrupt shadow, no
// interrupt window asked for, no I/O or MMIO read waiting for the VMM, NMIs unmasked (KVM clears
// them in kvm_vcpu_reset and init_vmcb; set_nmi_mask(vcpu, false)).
void Vcpu::drop_pending_events()
{
    auto& c = m_vmcb.control;
    c.event_inj = c.event_inj_err = 0;
    c.int_state = 0;
    c.int_ctl &= ~(int_ctl::V_IRQ | int_ctl::V_IGN_TPR | int_ctl::V_INTR_PRIO_MASK);
    c.intercepts[unsigned(Intercept::VINTR) / 32] &= ~(1u << (unsigned(Intercept::VINTR) % 32));
    m_irq_window = false;
    m_pending_in.reset();
    m_pending_mmio.reset();
    m_nmi_masked = false;
}

void Vcpu::init_event()
{
    if (m_es && m_guest_state_protected) {
        // The registers are the guest's, encrypted: INIT cannot reset them (KVM's INIT path for
        // a protected vCPU writes nothing the hardware would load). What was pending goes.
        drop_pending_events();
        m_es_pending.reset();
        m_nmi_iret_rip.reset();
        return;
    }
    set_power_on_registers(m_vmcb.save);
    // The general-purpose registers: zero, except RDX = the processor signature (CPUID 1 EAX),
    // as KVM's kvm_vcpu_reset writes it from the vCPU's CPUID table.
    m_gprs = {};
    for (auto const& e : m_cpuid)
        if (e.function == 1)
            m_gprs[RDX] = e.eax;
    drop_pending_events();
    // The translations the guest had are gone with CR0/CR3/CR4 (KVM_REQ_TLB_FLUSH_GUEST).
    request_tlb_flush();
}

void Vcpu::deliver_sipi(uint8_t vector)
{
    if (m_es) {
        // svm_vcpu_deliver_sipi_vector -> sev_vcpu_deliver_sipi_vector for every SEV-ES vCPU:
        // CS:IP are those of its VMSA (or the guest's own, after an AP reset hold).
        deliver_sipi_es();
        return;
    }
    // Only CS and RIP change; the rest is INIT's state (SDM vol 3 §9.4.4; APM vol 2 §16.5).
    m_vmcb.save.cs.selector = uint16_t(vector) << 8;
    m_vmcb.save.cs.base = uint64_t(vector) << 12;
    m_vmcb.save.rip = 0;
}

Vcpu::MigrationState Vcpu::migration_state() const
{
    auto const& c = m_vmcb.control;
    MigrationState st { m_vmcb.save, c.event_inj, c.event_inj_err, c.int_state, c.int_ctl, m_gprs, m_apic_base, m_irq_window };
    if (m_es) {
        // SEV-ES: the guest's registers are in its encrypted VMSA (SEND_UPDATE_VMSA carries it);
        // the staging copy of the launch is not theirs and does not travel.
        st.save = {};
        st.gprs = {};
    }
    st.ghcb_msr = c.ghcb_gpa;
    st.guest_state_protected = m_guest_state_protected;
    st.received_first_sipi = m_received_first_sipi;
    st.ap_reset_hold = uint8_t(m_ap_reset_hold);
    st.nmi_masked = m_nmi_masked;
    return st;
}

void Vcpu::set_migration_state(MigrationState const& st)
{
    auto& c = m_vmcb.control;
    // SEV-ES: the registers are the VMSA's (RECEIVE_UPDATE_VMSA); the VMCB save area and the
    // GPRs here are only the VMM's staging copy, which migration neither reads nor writes.
    if (!m_es) {
        m_vmcb.save = st.save;
        m_gprs = st.gprs;
    }
    c.event_inj = st.event_inj;
    c.event_inj_err = st.event_inj_err;
    c.int_state = st.int_state;
    // Only the guest's virtual-interrupt bits; the VINTR intercept follows V_IRQ as run() sets it.
    uint32_t const virq = int_ctl::V_IRQ | int_ctl::V_IGN_TPR | int_ctl::V_INTR_PRIO_MASK;
    c.int_ctl = (c.int_ctl & ~virq) | (st.int_ctl & virq);
    if (st.int_ctl & int_ctl::V_IRQ)
        set_intercept(c, Intercept::VINTR);
    m_apic_base = st.apic_base;
    m_irq_window = st.irq_window;
    m_pending_in.reset();
    m_pending_mmio.reset();
    if (m_es) {
        c.ghcb_gpa = st.ghcb_msr;
        // guest_state_protected is not taken from the caller: only RECEIVE_UPDATE_VMSA (or
        // LAUNCH_UPDATE_VMSA) puts an encrypted VMSA in place.
        m_received_first_sipi = st.received_first_sipi;
        m_ap_reset_hold = st.ap_reset_hold <= 2 ? ApResetHold(st.ap_reset_hold) : ApResetHold::None;
        m_nmi_masked = st.nmi_masked;
        m_es_pending.reset();
        m_ghcb.reset();
    }
    request_tlb_flush();
}

// A KVM paravirtual feature (CPUID 0x40000001 EAX) in the guest's table (KVM's guest_pv_has).
bool Vcpu::has_pv_feature(unsigned bit) const
{
    for (auto const& e : m_cpuid)
        if (e.function == 0x40000001u)
            return (e.eax >> bit) & 1;
    return false;
}

// The guest's MAXPHYADDR: CPUID 8000_0008 EAX[7:0] from its table (KVM's cpuid_maxphyaddr), 36
// when the table lacks the leaf.
unsigned Vcpu::guest_phys_bits() const
{
    for (auto const& e : m_cpuid)
        if (e.function == 0x80000008u && (e.eax & 0xFF))
            return std::min(e.eax & 0xFF, 63u);
    return 36;
}

bool Vcpu::ready_for_nmi_injection() const
{
    auto const& c = m_vmcb.control;
    return !m_nmi_masked && !(c.int_state & int_state::INTERRUPT_SHADOW) && !(c.event_inj & evtinj::VALID);
}

bool Vcpu::inject_nmi()
{
    if (!ready_for_nmi_injection())
        return false;
    // APM vol 2 §15.20: EVENTINJ TYPE 2 (NMI), vector 2.
    m_vmcb.control.event_inj = encode_event(Event { 2, EventType::NMI, std::nullopt });
    m_vmcb.control.event_inj_err = 0;
    m_nmi_masked = true;
    // The end of the handler: an intercepted IRET, or for SEV-ES the guest's NMI_COMPLETE
    // request (svm_set_iret_intercept leaves SEV-ES guests alone).
    if (!m_es)
        set_intercept(m_vmcb.control, Intercept::IRET);
    return true;
}

// kvm_emulate_cpuid(): the VMM's table (KVM_SET_CPUID2); a leaf it lacks reads as zeros.
CpuidEntry Vcpu::cpuid_lookup(uint32_t fn, uint32_t index) const
{
    for (auto const& e : m_cpuid)
        if (e.function == fn && (e.index == index || e.index == 0xFFFFFFFFu))
            return e;
    return CpuidEntry { fn, index, 0, 0, 0, 0 };
}

// The intercepted MSRs the layer emulates (kvm_get_msr / kvm_set_msr for them); false = #GP.
bool Vcpu::emulate_msr(uint32_t msr, bool write, uint64_t& value)
{
    if (msr == kMsrApicBase) {
        if (!write) {
            value = m_apic_base;
            return true;
        }
        // kvm_set_apic_base(): bits 0-7 and 9 reserved, EXTD too without x2APIC in the guest's
        // CPUID, and the address bits above MAXPHYADDR.
        uint64_t reserved = 0x2FF | kApicBaseExtd | ~((1ull << guest_phys_bits()) - 1);
        if (value & reserved)
            return false;
        m_apic_base = value;
        return true;
    }
    if (msr == MSR_KVM_MIGRATION_CONTROL) {
        // The guest's "ready to migrate" (the SEV live-migration series' svm_get_msr /
        // svm_set_msr): a VM-wide value; #GP when the guest's CPUID does not offer
        // KVM_FEATURE_MIGRATION_CONTROL, and for a write of any bit but KVM_MIGRATION_READY.
        if (!has_pv_feature(KVM_FEATURE_MIGRATION_CONTROL))
            return false;
        if (!write) {
            value = m_vm.migration_control();
            return true;
        }
        if (value & ~KVM_MIGRATION_READY)
            return false;
        m_vm.set_migration_control(value);
        return true;
    }
    if (write ? ignores_write(msr) : reads_as_zero(msr)) {
        if (!write)
            value = 0;
        return true;
    }
    // Any other intercepted MSR is one KVM does not emulate: #GP, as KVM does for unknown
    // MSRs (ignore_msrs=0).
    return false;
}

// RAX and RSP live in the VMCB save area, the others beside VMRUN (GuestGprs).
uint64_t Vcpu::get_gpr(Vmcb const& vmcb, unsigned index) const
{
    return index == RAX ? uint64_t(vmcb.save.rax) : index == 4 ? uint64_t(vmcb.save.rsp) : m_gprs[index];
}
void Vcpu::set_gpr(Vmcb& vmcb, unsigned index, uint64_t value)
{
    if (index == RAX)
        vmcb.save.rax = value;
    else if (index == 4)
        vmcb.save.rsp = value;
    else
        m_gprs[index] = value;
}

// MMIO through #NPF (KVM's npf_interception -> emulator): the decode-assist bytes name the
// instruction; a write goes to the VMM with its value and the guest continues after it, a read
// waits for complete_mmio_read().
std::optional<VcpuExit> Vcpu::emulate_mmio(Vmcb& vmcb, uint64_t gpa)
{
    auto& c = vmcb.control;
    auto& s = vmcb.save;
    if (c.insn_len == 0)
        return ExitInternalError { fmt::format("MMIO at GPA {:#x}: no instruction bytes (the fetch failed)", gpa) };
    bool lma = s.efer & (1u << 10);
    CodeSize mode = (lma && (s.cs.attrib & seg_attrib::L)) ? CodeSize::Bits64
        : ((s.cr0 & 1) && (s.cs.attrib & seg_attrib::DB)) ? CodeSize::Bits32
                                                           : CodeSize::Bits16;
    auto insn = decode_mmio_insn({ c.insn_bytes, std::min<size_t>(c.insn_len, 15) }, mode);
    if (!insn)
        return ExitInternalError { fmt::format("MMIO at GPA {:#x} (rip {:#x}): {}", gpa, uint64_t(s.rip), insn.error()) };
    if (insn->write) {
        uint64_t value = mmio_write_value(*insn, insn->reg ? get_gpr(vmcb, *insn->reg) : 0);
        s.rip += insn->length;
        return ExitMmio { gpa, uint8_t(insn->size), true, value };
    }
    m_pending_mmio = *insn;
    return ExitMmio { gpa, uint8_t(insn->size), false, 0 };
}

void Vcpu::complete_hypercall(uint64_t ret)
{
    if (m_es) {
        (void)complete_es_hypercall(ret);
        return;
    }
    m_vmcb.save.rax = ret;
}

void Vcpu::complete_mmio_read(uint64_t value)
{
    if (m_es) {
        (void)complete_es_mmio_read(value);
        return;
    }
    if (!m_pending_mmio)
        return;
    unsigned r = *m_pending_mmio->reg;
    set_gpr(m_vmcb, r, apply_mmio_read(*m_pending_mmio, get_gpr(m_vmcb, r), value));
    m_vmcb.save.rip += m_pending_mmio->length;
    m_pending_mmio.reset();
}

void Vcpu::complete_io_in(uint32_t value)
{
    if (m_es) {
        (void)complete_es_io_in(value);
        return;
    }
    if (!m_pending_in)
        return;
    uint64_t rax = m_vmcb.save.rax;
    switch (m_pending_in->size) {
    case 1:
        rax = (rax & ~0xFFull) | (value & 0xFF);
        break;
    case 2:
        rax = (rax & ~0xFFFFull) | (value & 0xFFFF);
        break;
    default:
        rax = value; // a 32-bit result is zero-extended to 64 bits
        break;
    }
    m_vmcb.save.rax = rax;
    m_pending_in.reset();
}

std::optional<VcpuExit> Vcpu::handle_exit(Vmcb& vmcb)
{
    auto& c = vmcb.control;
    auto& s = vmcb.save;
    c.event_inj = 0;
    // An event whose delivery the exit interrupted is injected again on the next entry (KVM's
    // svm_complete_interrupts); a software interrupt is not: its instruction runs again.
    if ((c.exit_int_info & evtinj::VALID) && ((c.exit_int_info >> evtinj::TYPE_SHIFT) & 7) != uint32_t(EventType::SOFT_INT)) {
        c.event_inj = c.exit_int_info;
        c.event_inj_err = c.exit_int_info_err;
    }
    // The guest's NMI handler returned: its IRET was intercepted and has now run (KVM's
    // svm_complete_interrupts: NMIs are unmasked once RIP differs from the IRET's).
    if (m_nmi_iret_rip && (m_es || s.rip != *m_nmi_iret_rip)) {
        m_nmi_iret_rip.reset();
        m_nmi_masked = false;
    }
    if (m_es)
        return handle_exit_es(vmcb);
    switch (c.exit_code) {
    case exitcode::SVM_EXIT_IRET:
        // The end of an NMI handler (iret_interception): drop the intercept and let the IRET
        // run; NMIs stay masked until it has completed (above).
        c.intercepts[unsigned(Intercept::IRET) / 32] &= ~(1u << (unsigned(Intercept::IRET) % 32));
        m_nmi_iret_rip = uint64_t(s.rip);
        return std::nullopt;
    case exitcode::SVM_EXIT_VINTR:
        // The interrupt window is open (svm_enable_irq_window's V_IRQ was taken): drop the
        // virtual interrupt and the intercept, and let the VMM inject the real one.
        c.int_ctl &= ~(int_ctl::V_IRQ | int_ctl::V_IGN_TPR | int_ctl::V_INTR_PRIO_MASK);
        c.intercepts[unsigned(Intercept::VINTR) / 32] &= ~(1u << (unsigned(Intercept::VINTR) % 32));
        m_irq_window = false;
        return ExitIrqWindowOpen {};
    case exitcode::SVM_EXIT_CPUID: {
        // kvm_emulate_cpuid(): the VMM's table (KVM_SET_CPUID2); a leaf it lacks reads as zeros.
        CpuidEntry found = cpuid_lookup(uint32_t(s.rax), uint32_t(m_gprs[RCX]));
        s.rax = found.eax;
        m_gprs[RBX] = found.ebx;
        m_gprs[RCX] = found.ecx;
        m_gprs[RDX] = found.edx;
        s.rip = c.next_rip;
        return std::nullopt;
    }
    case exitcode::SVM_EXIT_IOIO: {
        // APM vol 2 §15.10.2 Figure 15-2.
        uint64_t info = c.exit_info_1;
        if (info & (1u << 2))
            return ExitInternalError { fmt::format("string I/O on port {:#x} is not emulated (SEV guests unroll it)", info >> 16) };
        uint8_t size = (info & (1u << 4)) ? 1 : (info & (1u << 5)) ? 2 : 4;
        ExitIo io { uint16_t(info >> 16), size, bool(info & 1), 0 };
        if (!io.in)
            io.value = uint32_t(s.rax & (size == 4 ? 0xFFFFFFFFull : (1ull << (8 * size)) - 1));
        else
            m_pending_in = io;
        s.rip = c.exit_info_2; // the next RIP
        return io;
    }
    case exitcode::SVM_EXIT_MSR: {
        // EXITINFO1 = 0 for RDMSR, 1 for WRMSR; ECX names the MSR (APM vol 2 §15.11).
        bool write = c.exit_info_1 & 1;
        uint64_t value = write ? (uint32_t(s.rax) | (m_gprs[RDX] << 32)) : 0;
        if (!emulate_msr(uint32_t(m_gprs[RCX]), write, value)) {
            inject_gp(vmcb);
            return std::nullopt;
        }
        if (!write) {
            s.rax = uint32_t(value);
            m_gprs[RDX] = value >> 32;
        }
        s.rip = c.next_rip;
        return std::nullopt;
    }
    case exitcode::SVM_EXIT_HLT:
        s.rip = c.next_rip;
        return ExitHlt {};
    case exitcode::SVM_EXIT_SHUTDOWN:
        return ExitShutdown {};
    case exitcode::SVM_EXIT_VMMCALL: {
        uint64_t nr = s.rax;
        s.rip = c.next_rip;
        if (nr == KVM_HC_MAP_GPA_RANGE) {
            // kvm_emulate_hypercall(), case KVM_HC_MAP_GPA_RANGE: the kernel refuses a GPA
            // that is not page-aligned, zero pages, and a range whose last gfn wraps, with
            // -KVM_EINVAL to the guest and no exit; the attributes are the VMM's to check.
            uint64_t gpa = m_gprs[RBX], npages = m_gprs[RCX];
            uint64_t gfn = gpa >> kPageShift;
            if ((gpa & kPageMask) || npages == 0 || gfn + npages <= gfn) {
                s.rax = uint64_t(-int64_t(KVM_EINVAL));
                return std::nullopt;
            }
            return ExitHypercall { nr, { gpa, npages, m_gprs[RDX] } };
        }
        s.rax = uint64_t(-int64_t(KVM_ENOSYS));
        return std::nullopt;
    }
    case exitcode::SVM_EXIT_INTR:
        return ExitIntr {}; // the host took its interrupt: the VMM runs, then re-enters
    case exitcode::SVM_EXIT_NMI:
        return std::nullopt;
    case exitcode::SVM_EXIT_NPF:
        if (!m_vm.gpa_to_spa(Gpa(c.exit_info_2)))
            return emulate_mmio(vmcb, c.exit_info_2);
        return ExitInternalError { fmt::format("nested page fault at GPA {:#x} (error {:#x}) inside a memory slot",
            uint64_t(c.exit_info_2), uint64_t(c.exit_info_1)) };
    case exitcode::VMEXIT_INVALID:
        return ExitFailEntry { uint64_t(c.exit_code) };
    default:
        return ExitInternalError { fmt::format("unhandled #VMEXIT {:#x} (EXITINFO1 {:#x}, EXITINFO2 {:#x})",
            uint64_t(c.exit_code), uint64_t(c.exit_info_1), uint64_t(c.exit_info_2)) };
    }
}

VcpuExit Vcpu::run(SvmExecutor& cpu)
{
    auto& mc = m_vm.host().memory();
    if (m_pending_in)
        return ExitInternalError { "KVM_RUN before the pending IN was completed" };
    if (m_pending_mmio)
        return ExitInternalError { "KVM_RUN before the pending MMIO read was completed" };
    if (m_es) {
        // KVM runs an SEV-ES vCPU only with an encrypted VMSA (the VMCB's save area is not
        // what VMRUN loads).
        if (!m_guest_state_protected)
            return ExitInternalError { "KVM_RUN on an SEV-ES vCPU before KVM_SEV_LAUNCH_UPDATE_VMSA" };
        if (m_es_pending && m_es_pending->awaiting)
            return ExitInternalError { "KVM_RUN before the pending GHCB request (IN or MMIO read) was completed" };
    }
    if (m_first_run)
        m_vm.note_vcpu_created();
    m_executor = &cpu;
    struct ClearExecutor {
        SvmExecutor*& p;
        ~ClearExecutor() { p = nullptr; }
    } clear_executor { m_executor };
    while (true) {
        // The rest of a GHCB request that takes several exits (string I/O, MMIO > 8 bytes).
        if (m_es_pending) {
            if (auto exit = next_es_pending_exit())
                return *exit;
        }
        unmap_ghcb();
        if (m_irq_window && !(m_vmcb.control.event_inj & evtinj::VALID)) {
            if (ready_for_interrupt_injection()) {
                m_irq_window = false;
                return ExitIrqWindowOpen {};
            }
            // A virtual interrupt the guest takes as soon as it can, intercepted (§15.21.4).
            m_vmcb.control.int_ctl |= int_ctl::V_IRQ | int_ctl::V_IGN_TPR | (0xFu << 16);
            set_intercept(m_vmcb.control, Intercept::VINTR);
        }
        // Out: the VMCB fields VMRUN reads (the control area's, and the save area unless SEV-ES,
        // whose state is in the VMSA). In: those #VMEXIT (and the VMSAVE after it) can have
        // written. The reserved rest of the page is never copied: copying whole pages at every
        // entry and exit was a good part of a world switch's cost (perf).
        auto const none = mmu::KeyId::none();
        if (!write_vmcb_range(mc, m_vmcb_page, none, kVmcbControlUsed, m_vmcb)
            || (!m_es && !write_vmcb_range(mc, m_vmcb_page, none, kVmcbSaveArea, m_vmcb)))
            return ExitInternalError { "VMCB page is not DRAM" };
        auto r = cpu.vmrun(m_vmcb_page, m_hsave_page, m_gprs);
        if (!r)
            return ExitInternalError { r.error() };
        if (!read_vmcb_range(mc, m_vmcb_page, none, kVmcbExitControl, m_vmcb)
            || (!m_es && !read_vmcb_range(mc, m_vmcb_page, none, kVmcbExitSave, m_vmcb)))
            return ExitInternalError { "VMCB page is not DRAM" };
        // After the first entry the TLB of this ASID is ours; flush only when asked again.
        m_vmcb.control.tlb_ctl = tlb_control::DO_NOTHING;
        m_first_run = false;
        if (auto exit = handle_exit(m_vmcb))
            return *exit;
    }
}

} // namespace sevemu::vmm
